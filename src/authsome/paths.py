"""Where authsome keeps its files, and the only way files are written there: private and atomic.

Layout of ``$AUTHSOME_HOME`` (default ``~/.authsome``)::

    version            layout version
    config.json        settings (key source, …)
    providers/         user provider JSON files (override bundled ones)
    profiles/<name>/   store.db + store.lock per profile

Directories are 0700 and files 0600, created with those modes (no chmod-after-write window).
A home that is a symlink, or owned by another user, is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsome.errors import StoreUnavailable, UsageError

LAYOUT_VERSION = "1"
DIR_MODE = 0o700
FILE_MODE = 0o600
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    """Validate a profile/connection/provider name: lowercase letters, digits, '-' and '_' (max 64)."""
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid {kind} name {name!r}",
            "use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit",
        )
    return name


def default_home() -> Path:
    """``$AUTHSOME_HOME`` if set, else ``~/.authsome``."""
    env = os.environ.get("AUTHSOME_HOME")
    return Path(env).expanduser() if env else Path.home() / ".authsome"


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Temporarily set umask 077 so every file created (e.g. SQLite journals) is private."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if missing; refuse a symlink or a directory owned by someone else."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreUnavailable(f"cannot create {path}: {exc.strerror}", "check the path and its permissions") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise StoreUnavailable(f"{path} is a symlink; refusing to use it", "point AUTHSOME_HOME at a real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise StoreUnavailable(f"{path} is not a directory", "remove it or set AUTHSOME_HOME elsewhere")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise StoreUnavailable(
            f"{path} is owned by another user; refusing to use it", "set AUTHSOME_HOME to a directory you own"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, DIR_MODE)
    return path


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``: a 0600 temp file in the same directory, fsync, rename."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def create_private_file_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` only if it does not exist (0600, atomic). Returns False if it existed."""
    import tempfile

    tmp_fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(tmp_fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if path exists: no window where a half-written file is visible
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass(frozen=True)
class Home:
    """The authsome home directory and the paths inside it."""

    root: Path

    @classmethod
    def resolve(cls, root: Path | None = None) -> Home:
        """The home at ``root`` (or the default), created with private modes on first use."""
        home = cls.locate(root)
        home.ensure()
        return home

    @classmethod
    def locate(cls, root: Path | None = None) -> Home:
        """The home at ``root`` (or the default) as it is: nothing is created or changed (``doctor`` reads this)."""
        return cls((root or default_home()).absolute())

    @property
    def providers_dir(self) -> Path:
        return self.root / "providers"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def version_file(self) -> Path:
        return self.root / "version"

    def profile_dir(self, profile: str) -> Path:
        """The directory of one profile, created on first use."""
        check_name("profile", profile)
        profiles = ensure_private_dir(self.root / "profiles")
        return ensure_private_dir(profiles / profile)

    def profiles(self) -> list[str]:
        base = self.root / "profiles"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def ensure(self) -> None:
        """Create the layout if missing (idempotent and cheap when it exists)."""
        ensure_private_dir(self.root)
        if not os.access(self.root, os.R_OK | os.X_OK):
            inside_run = bool(os.environ.get("AUTHSOME_RUN"))
            raise StoreUnavailable(
                f"the authsome home {self.root} cannot be read"
                + (": inside `authsome run` it is hidden from the child" if inside_run else ""),
                "use authsome outside the run; inside it, the proxy adds credentials to requests"
                if inside_run
                else "check the directory's permissions",
            )
        if not self.version_file.exists():
            create_private_file_exclusive(self.version_file, (LAYOUT_VERSION + "\n").encode())
            ensure_private_dir(self.providers_dir)
            ensure_private_dir(self.root / "profiles")

    def read_config(self) -> dict[str, Any]:
        try:
            data = json.loads(self.config_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(f"cannot read {self.config_file}: {exc}", "fix or delete the file") from None
        return data if isinstance(data, dict) else {}

    def write_config(self, config: dict[str, Any]) -> None:
        write_private_file(self.config_file, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """An exclusive cross-process lock on ``path`` (created 0600), held for the ``with`` block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"timed out waiting for the lock {path}", "another authsome command is still running"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing releases the lock
