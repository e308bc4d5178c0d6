"""The records of one profile in PostgreSQL: the same contract as the SQLite :class:`~authsome.store.vault.Vault`.

Secrets are sealed in this process before a record is sent (:func:`authsome.store.backend.seal`); the database holds
the same JSON text as the local store. A transaction is one database transaction (READ COMMITTED; each write is one
statement, ``update_plain`` locks the row it merges into). :meth:`PgVault.lock` is the single-flight lock of a refresh
across replicas: a transaction on its own connection that holds ``pg_advisory_xact_lock`` for (profile, name) and
nothing else, so the writes made under it commit as they go (as with the local lock file) and a replica that dies
holding it releases it when its connection drops (the transaction ends). Every write notifies the other replicas as
it commits (:mod:`authsome.store.pg.changes`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from authsome.errors import StoreUnavailable
from authsome.secret import Secret
from authsome.store.backend import Doc, RecordDamaged, dump, parse, parse_rows, seal, unseal
from authsome.store.pg.changes import notify_record
from authsome.store.pg.database import LOCK_TIMEOUT, Database
from authsome.store.pg.schema import Conn, lock_id

if TYPE_CHECKING:
    from authsome.store import keysource


@dataclass
class _Held:
    """The advisory locks this thread holds, and the connection whose transaction holds them."""

    conn: Conn
    keys: set[int] = field(default_factory=set)


class PgVault:
    """The encrypted records of one profile in a shared PostgreSQL database."""

    def __init__(self, db: Database, profile: str, key_loader: Callable[[], keysource.KeySource]) -> None:
        self.db = db
        self.profile = profile
        self._key_loader = key_loader
        self._key: bytes | None = None
        self._local = threading.local()

    def describe(self) -> str:
        return f"{self.db.where} (profile {self.profile})"

    def master_key(self) -> bytes:
        """The master key, loaded once per process and checked against the one that sealed the database."""
        if self._key is None:
            from authsome.store import crypto

            key = self._key_loader().load()
            self.db.check_key(crypto.key_id(key))
            self._key = key
        return self._key

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Conn]:
        current: PgTransaction | None = getattr(self._local, "txn", None)
        if current is not None:
            yield current.conn
            return
        with self.db.connection() as conn:
            yield conn

    # -- reads -----------------------------------------------------------------------------------------------------
    def keys(self, prefix: str = "") -> list[str]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT key FROM authsome_records WHERE profile = %s AND starts_with(key, %s) ORDER BY key",
                (self.profile, prefix),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def read(self, key: str) -> Doc | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT value FROM authsome_records WHERE profile = %s AND key = %s", (self.profile, key)
            ).fetchone()
        return None if row is None else parse(key, row[0])

    def read_prefix(self, prefix: str) -> list[tuple[str, Doc | RecordDamaged]]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT key, value FROM authsome_records WHERE profile = %s AND starts_with(key, %s) ORDER BY key",
                (self.profile, prefix),
            ).fetchall()
        return parse_rows(rows)

    def reveal(self, key: str, doc: Doc, field: str) -> Secret | None:
        return unseal(self.master_key, self.profile, key, doc, field)

    # -- writes ----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str | None = None) -> Iterator[None]:
        """Single-flight across processes and replicas for ``name`` (a record key; None: the whole profile)."""
        key = lock_id(self.profile, name or "")
        held: _Held | None = getattr(self._local, "locks", None)
        if held is not None:  # nested: one more lock in the same transaction, released with the outermost
            if key not in held.keys:
                with self.db.errors():
                    held.conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                held.keys.add(key)
            yield
            return
        flight = self.db.flight(key)
        if not flight.acquire(timeout=_seconds(LOCK_TIMEOUT)):
            raise StoreUnavailable(
                f"timed out waiting for the lock on {name or self.profile}", "another refresh is still running"
            )
        try:
            with self.db.lock_connection() as conn, conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_TIMEOUT,))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                self._local.locks = _Held(conn, {key})
                try:
                    yield
                finally:
                    self._local.locks = None
        finally:
            flight.release()

    def current(self) -> PgTransaction | None:
        """The transaction open on this thread, if any."""
        found: PgTransaction | None = getattr(self._local, "txn", None)
        return found

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgTransaction]:
        """All-or-nothing writes in one database transaction. Nested calls join the outer transaction."""
        current: PgTransaction | None = getattr(self._local, "txn", None)
        if current is not None:
            yield current
            return
        with self.db.connection() as conn, conn.transaction():
            txn = PgTransaction(self, conn)
            self._local.txn = txn
            try:
                yield txn
            finally:
                self._local.txn = None


class PgTransaction:
    """Writes inside :meth:`PgVault.transaction`."""

    def __init__(self, vault: PgVault, conn: Conn) -> None:
        self.vault = vault
        self.conn = conn

    def write(self, key: str, doc: Doc, secrets: Mapping[str, Secret | None]) -> None:
        sealed = seal(self.vault.master_key(), self.vault.profile, key, secrets)
        self.conn.execute(
            "INSERT INTO authsome_records (profile, key, value, updated_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (profile, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (self.vault.profile, key, dump({**doc, "secrets": sealed}), time.time()),
        )
        notify_record(self.conn, self.vault.profile, key)

    def update_plain(self, key: str, changes: Doc) -> bool:
        row = self.conn.execute(
            "SELECT value FROM authsome_records WHERE profile = %s AND key = %s FOR UPDATE", (self.vault.profile, key)
        ).fetchone()
        if row is None:
            return False
        doc = parse(key, row[0])
        doc.update(changes)
        self.conn.execute(
            "UPDATE authsome_records SET value = %s, updated_at = %s WHERE profile = %s AND key = %s",
            (dump(doc), time.time(), self.vault.profile, key),
        )
        notify_record(self.conn, self.vault.profile, key)
        return True

    def delete(self, key: str) -> bool:
        cur = self.conn.execute(
            "DELETE FROM authsome_records WHERE profile = %s AND key = %s", (self.vault.profile, key)
        )
        if cur.rowcount > 0:
            notify_record(self.conn, self.vault.profile, key)
        return cur.rowcount > 0

    def delete_prefix(self, prefix: str) -> int:
        cur = self.conn.execute(
            "DELETE FROM authsome_records WHERE profile = %s AND starts_with(key, %s)", (self.vault.profile, prefix)
        )
        if cur.rowcount > 0:
            notify_record(self.conn, self.vault.profile, prefix)
        return cur.rowcount


def _seconds(duration: str) -> float:
    return float(duration.rstrip("s"))
