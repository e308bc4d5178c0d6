"""The database schema, created and migrated by the program: numbered migrations applied in order, each once.

Safe when several replicas start at once: migrating happens in one transaction holding a transaction-scoped advisory
lock; a replica that finds the schema current does not take it. A database migrated by a newer authsome is refused
(this one does not know its tables), never changed.

Tables (all prefixed ``authsome_``, so the database may hold other things):

- ``authsome_schema``: one row per applied migration.
- ``authsome_meta``: ``key_id``, the public identifier of the master key that sealed the records (a replica with
  another key is refused before it writes anything).
- ``authsome_records``: ``(profile, key)`` → the record's JSON text, exactly as the SQLite store holds it (secret
  fields sealed); connections, OAuth clients, agents, the audit head. A profile exists as long as it has records.
- ``authsome_providers``: custom provider files by name (the ``providers/`` directory of a local home).
- ``authsome_audit``: the audit trail, one chain per profile: ``(profile, seq)`` → the record's JSON line.
"""

from __future__ import annotations

import hashlib

from psycopg import Connection
from psycopg.rows import TupleRow

from authsome.errors import StoreUnavailable

Conn = Connection[TupleRow]

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "records, providers, audit trail, key id",
        (
            "CREATE TABLE authsome_meta (name text PRIMARY KEY, value text NOT NULL)",
            'CREATE TABLE authsome_records (profile text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,'
            " value text NOT NULL, updated_at double precision NOT NULL, PRIMARY KEY (profile, key))",
            'CREATE TABLE authsome_providers (name text COLLATE "C" PRIMARY KEY, body text NOT NULL,'
            " updated_at double precision NOT NULL)",
            'CREATE TABLE authsome_audit (profile text COLLATE "C" NOT NULL, seq bigint NOT NULL, line text NOT NULL,'
            " PRIMARY KEY (profile, seq))",
        ),
    ),
)
LATEST = MIGRATIONS[-1][0]


def lock_id(*parts: str) -> int:
    """A 64-bit advisory lock key for a name (stable across processes and versions)."""
    digest = hashlib.sha256(b"authsome-lock|" + "|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


MIGRATION_LOCK = lock_id("migrate")


def version(conn: Conn) -> int:
    """The schema version of the database (0: none yet); only reads."""
    row = conn.execute("SELECT to_regclass('authsome_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) FROM authsome_schema").fetchone()
    return int(found[0]) if found else 0


def check_not_newer(found: int, where: str) -> None:
    if found > LATEST:
        raise StoreUnavailable(
            f"the store database {where} has schema version {found}; this authsome knows up to {LATEST}",
            "upgrade authsome on this machine (every replica must run a version that knows the schema)",
        )


def migrate(conn: Conn, where: str) -> int:
    """Bring the schema to :data:`LATEST` (a no-op when it is); returns the version found before."""
    found = version(conn)
    check_not_newer(found, where)
    if found == LATEST:
        return found
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS authsome_schema (version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        found = version(conn)  # another replica may have migrated while this one waited for the lock
        check_not_newer(found, where)
        for number, description, statements in MIGRATIONS:
            if number <= found:
                continue
            for statement in statements:
                conn.execute(statement.encode())
            conn.execute("INSERT INTO authsome_schema (version, description) VALUES (%s, %s)", (number, description))
    return found
