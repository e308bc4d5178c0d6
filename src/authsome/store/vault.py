"""One SQLite file per profile holding JSON records whose secret fields are AES-GCM envelopes.

Reads need no key unless a secret is revealed, so listing stays fast. Writes happen inside
:meth:`Vault.transaction`: a cross-process lock (``store.lock``), ``BEGIN IMMEDIATE``, commit on success and
rollback on any exception, so a failed command leaves the store exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from authsome.errors import StoreUnavailable
from authsome.paths import FILE_MODE, file_lock, private_umask
from authsome.secret import Secret
from authsome.store.backend import Doc, RecordDamaged, dump, parse_rows, seal, unseal
from authsome.store.backend import parse as _parse

if TYPE_CHECKING:
    from authsome.store import keysource

__all__ = ["Doc", "RecordDamaged", "Transaction", "Vault"]
_SCHEMA = "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL)"


class Vault:
    """The encrypted store of one profile (the SQLite backend of :class:`authsome.store.backend.RecordStore`)."""

    def __init__(self, profile_dir: Path, profile: str, key_loader: Callable[[], keysource.KeySource]) -> None:
        self.path = profile_dir / "store.db"
        self.lock_path = profile_dir / "store.lock"
        self.profile = profile
        self._key_loader = key_loader
        self._key: bytes | None = None
        self._local = threading.local()

    # -- key -----------------------------------------------------------------------------------------------------
    def master_key(self) -> bytes:
        """The master key, loaded once per process."""
        if self._key is None:
            self._key = self._key_loader().load()
        return self._key

    def describe(self) -> str:
        return str(self.path)

    # -- connections ---------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            if not self.path.exists():
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), FILE_MODE))
            with private_umask():
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"the store {self.path} is unreadable: {exc}", "restore it from a backup") from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc.strerror}", "check its owner and mode") from None
        return conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        current: Transaction | None = getattr(self._local, "txn", None)
        if current is not None:
            yield current.conn
            return
        conn = self._connect()
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"the store {self.path} is unreadable: {exc}", "restore it from a backup") from None
        finally:
            conn.close()

    # -- reads ---------------------------------------------------------------------------------------------------
    def keys(self, prefix: str = "") -> list[str]:
        """Record keys starting with ``prefix``, sorted."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT key FROM records WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
            )
            return [r[0] for r in rows]

    def read(self, key: str) -> Doc | None:
        """The record's document (secrets still encrypted), or None. :class:`RecordDamaged` if not JSON."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM records WHERE key = ?", (key,)).fetchone()
        return None if row is None else _parse(key, row[0])

    def read_prefix(self, prefix: str) -> list[tuple[str, Doc | RecordDamaged]]:
        """Every record under ``prefix``; damaged ones come back as the error instead of stopping the listing."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT key, value FROM records WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
            ).fetchall()
        return parse_rows(rows)

    def reveal(self, key: str, doc: Doc, field: str) -> Secret | None:
        """Decrypt one secret field of a record read from ``key``."""
        return unseal(self.master_key, self.profile, key, doc, field)

    # -- writes --------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str | None = None) -> Iterator[None]:
        """The profile's cross-process lock (whatever ``name``: the whole profile); re-entrant within a thread."""
        depth = getattr(self._local, "lock_depth", 0)
        if depth:
            self._local.lock_depth = depth + 1
            try:
                yield
            finally:
                self._local.lock_depth = depth
            return
        with file_lock(self.lock_path):
            self._local.lock_depth = 1
            try:
                yield
            finally:
                self._local.lock_depth = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All-or-nothing writes under the profile lock. Nested calls join the outer transaction."""
        current: Transaction | None = getattr(self._local, "txn", None)
        if current is not None:
            yield current
            return
        with self.lock():
            conn = self._connect()
            txn = Transaction(self, conn)
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._local.txn = txn
                yield txn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._local.txn = None
                conn.close()


class Transaction:
    """Writes inside :meth:`Vault.transaction`."""

    def __init__(self, vault: Vault, conn: sqlite3.Connection) -> None:
        self.vault = vault
        self.conn = conn

    def write(self, key: str, doc: Doc, secrets: Mapping[str, Secret | None]) -> None:
        """Store ``doc`` under ``key`` with each given secret encrypted and bound to (profile, key, field)."""
        sealed = seal(self.vault.master_key(), self.vault.profile, key, secrets)
        body = dump({**doc, "secrets": sealed})
        self.conn.execute(
            "INSERT INTO records(key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, body, time.time()),
        )

    def update_plain(self, key: str, changes: Doc) -> bool:
        """Merge ``changes`` into a record's non-secret fields, keeping its sealed secrets; False if absent."""
        row = self.conn.execute("SELECT value FROM records WHERE key = ?", (key,)).fetchone()
        if row is None:
            return False
        doc = _parse(key, row[0])
        doc.update(changes)
        self.conn.execute(
            "UPDATE records SET value = ?, updated_at = ? WHERE key = ?",
            (dump(doc), time.time(), key),
        )
        return True

    def delete(self, key: str) -> bool:
        """Delete one record; True if it existed."""
        return self.conn.execute("DELETE FROM records WHERE key = ?", (key,)).rowcount > 0

    def delete_prefix(self, prefix: str) -> int:
        """Delete every record under ``prefix``; returns how many."""
        return self.conn.execute("DELETE FROM records WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).rowcount
