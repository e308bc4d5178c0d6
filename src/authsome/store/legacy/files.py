"""File handling around a legacy home: read-only SQLite, the backup copy taken before an import, private modes."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from authsome.errors import StoreUnavailable
from authsome.paths import DIR_MODE, ensure_private_dir, private_umask

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal")  # folded into the copy of their database by SQLite's backup


@contextlib.contextmanager
def readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """``path`` opened read-only (SQLite may add its -wal/-shm side files, private, as any reader of a WAL database)."""
    try:
        with private_umask():
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open {path}: {exc}", "check the file and its permissions") from None
    try:
        yield conn
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"{path} is unreadable: {exc}", "is it damaged? restore it from a backup") from None
    finally:
        conn.close()


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


def backup(root: Path, entries: Iterable[Path], name: str) -> Path:
    """Copy ``entries`` (files and directories directly under ``root``) to ``root/backups/<name>``, private.

    The copy is made in a temporary directory and renamed into place, so a backup that exists is whole. SQLite
    databases are copied with SQLite's own backup (a consistent snapshot, WAL included) and every file is 0600.
    """
    parent = ensure_private_dir(root / "backups")
    target = parent / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        for entry in entries:
            _copy(entry, staging / entry.name)
        os.replace(staging, target)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StoreUnavailable(
            f"cannot back up the home to {target}: {reason}", "check the disk and its space"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _copy(src: Path, dst: Path) -> None:
    st = src.lstat()
    if stat.S_ISLNK(st.st_mode):
        return  # a link is not followed out of the home
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst, DIR_MODE)
        for child in sorted(src.iterdir()):
            _copy(child, dst / child.name)
        return
    if not stat.S_ISREG(st.st_mode) or src.name.endswith(_SKIP_SUFFIXES):
        return
    if _is_sqlite(src):
        with readonly(src) as conn, private_umask():
            out = sqlite3.connect(dst)
            try:
                conn.backup(out)
            finally:
                out.close()
        return
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out_fh, open(src, "rb") as in_fh:
        shutil.copyfileobj(in_fh, out_fh)


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def make_private(entries: Iterable[Path]) -> None:
    """Take group and other permissions off ``entries`` and everything below them (directories become 0700)."""
    for entry in entries:
        for path in [entry, *(entry.rglob("*") if entry.is_dir() and not entry.is_symlink() else ())]:
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    continue
                mode = DIR_MODE if stat.S_ISDIR(st.st_mode) else stat.S_IMODE(st.st_mode) & 0o700
                if mode != stat.S_IMODE(st.st_mode):
                    os.chmod(path, mode)
