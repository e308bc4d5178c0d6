"""One PostgreSQL database shared by authsome processes and gateway replicas: connection pools, errors, the key check.

One :class:`Database` per URL per process (:func:`database`), with two pools: one for reads and writes, one for the
connections that hold a refresh lock (kept apart so that threads waiting for a lock never take the connections the
holder needs to finish). The first use connects directly (a clear error when the server cannot be reached or refuses
the login) and migrates the schema. The URL may hold a password: it is never printed; messages name the database as
``postgresql://user@host:port/dbname``.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from authsome.errors import StoreUnavailable
from authsome.store.pg import schema
from authsome.store.pg.schema import Conn

POOL_SIZE = 10  # connections for reads and writes, per process
LOCK_POOL_SIZE = 8  # connections holding a refresh lock, per process
CONNECT_TIMEOUT = 10  # seconds
LOCK_TIMEOUT = "30s"  # how long a refresh waits for another replica's (as the local store's lock file)
_OPTIONS = {
    "application_name": "authsome",
    "connect_timeout": CONNECT_TIMEOUT,
    # A replica whose host vanishes must not hold a refresh lock for the system default of two hours.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
_HINT = "check AUTHSOME_STORE_URL (or --store), the server, and the password (PGPASSWORD or ~/.pgpass)"
_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def database(url: str) -> Database:
    """The process's :class:`Database` for ``url`` (connected on first use)."""
    with _databases_lock:
        found = _databases.get(url)
        if found is None:
            found = _databases[url] = Database(url)
        return found


def forget(url: str) -> None:
    """Close the process's pools for ``url``, if any (tests; a process that drops a database)."""
    with _databases_lock:
        found = _databases.pop(url, None)
    if found is not None:
        found.close()


def where(url: str) -> str:
    """``url`` without its password or options: ``postgresql://user@host:port/dbname``."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(an unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


class Database:
    """The pools and state of one database in this process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = where(url)
        self._pool: ConnectionPool[Conn] | None = None
        self._lock_pool: ConnectionPool[Conn] | None = None
        self._guard = threading.Lock()
        self._key_id: str | None = None
        self._flights: dict[int, threading.Lock] = {}
        self._closing_at_exit = False

    # -- connecting ------------------------------------------------------------------------------------------------
    def connect(self) -> Conn:
        """A new connection outside the pools (autocommit); :class:`StoreUnavailable` saying why it failed."""
        try:
            return psycopg.connect(self.url, autocommit=True, **_OPTIONS)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot reach the store database {self.where}: {first_line(exc)}", _HINT) from None

    def _pools(self) -> tuple[ConnectionPool[Conn], ConnectionPool[Conn]]:
        with self._guard:
            if self._pool is None or self._lock_pool is None:
                with self.connect() as conn, self.errors():
                    schema.migrate(conn, self.where)
                self._pool = self._new_pool("authsome", 1, POOL_SIZE)
                self._lock_pool = self._new_pool("authsome-locks", 0, LOCK_POOL_SIZE)
                if not self._closing_at_exit:
                    atexit.register(self.close)
                    self._closing_at_exit = True
            return self._pool, self._lock_pool

    def _new_pool(self, name: str, min_size: int, max_size: int) -> ConnectionPool[Conn]:
        pool: ConnectionPool[Conn] = ConnectionPool(
            self.url,
            kwargs={"autocommit": True, **_OPTIONS},
            min_size=min_size,
            max_size=max_size,
            check=ConnectionPool.check_connection,  # a connection broken while idle is replaced, not used
            name=name,
            open=False,
            timeout=CONNECT_TIMEOUT * 3,
        )
        pool.open()
        return pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled connection (autocommit) for the ``with`` block; database failures become StoreUnavailable."""
        pool, _ = self._pools()
        with self.errors(), pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def lock_connection(self) -> Iterator[Conn]:
        """A connection from the lock pool, for a transaction that only holds advisory locks."""
        _, pool = self._pools()
        with self.errors(), pool.connection() as conn:
            yield conn

    def flight(self, lock_key: int) -> threading.Lock:
        """The in-process lock for one advisory lock key: threads of one process queue here, not in the database."""
        with self._guard:
            return self._flights.setdefault(lock_key, threading.Lock())

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn a database failure into :class:`StoreUnavailable` naming the database (never the URL's password)."""
        try:
            yield
        except psycopg.errors.LockNotAvailable:
            raise StoreUnavailable(
                f"timed out waiting for a lock in the store database {self.where}",
                "another authsome process or replica is still refreshing; try again",
            ) from None
        except PoolTimeout:
            raise StoreUnavailable(
                f"no connection to the store database {self.where} became free in time", _HINT
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"lost the store database {self.where}: {first_line(exc)}", _HINT) from None
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"the store database {self.where} failed: {first_line(exc)}",
                "run `authsome doctor`; the schema may have been changed by hand",
            ) from None

    def close(self) -> None:
        with self._guard:
            for pool in (self._pool, self._lock_pool):
                if pool is not None:
                    pool.close(timeout=1)
            self._pool = self._lock_pool = None

    def profiles(self) -> list[str]:
        """The profiles that have records in this database."""
        with self.connection() as conn:
            rows = conn.execute("SELECT DISTINCT profile FROM authsome_records ORDER BY profile").fetchall()
        return [str(r[0]) for r in rows]

    # -- the key -----------------------------------------------------------------------------------------------------
    def check_key(self, key_id: str) -> None:
        """Record the master key's id on first use; refuse a key other than the one that sealed the records."""
        if self._key_id == key_id:
            return
        with self.connection() as conn:
            conn.execute(
                "INSERT INTO authsome_meta (name, value) VALUES ('key_id', %s) ON CONFLICT (name) DO NOTHING", (key_id,)
            )
            row = conn.execute("SELECT value FROM authsome_meta WHERE name = 'key_id'").fetchone()
        if row is None or row[0] != key_id:
            raise wrong_key(self.where)
        self._key_id = key_id


def wrong_key(where: str) -> StoreUnavailable:
    return StoreUnavailable(
        f"the store database {where} was sealed with another master key than this machine's",
        "give every replica the same key: copy the home's master.key (or use the same key source) to it",
    )
