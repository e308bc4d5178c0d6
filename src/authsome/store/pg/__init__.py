"""The PostgreSQL backend of the store: one database shared by gateway replicas (``--store postgresql://…`` or
``AUTHSOME_STORE_URL``). The only package that imports psycopg (an import-linter contract)."""

from __future__ import annotations

from authsome.store.pg import changes, providers
from authsome.store.pg.audit import PgAuditLog  # (after the vault: it builds on it)
from authsome.store.pg.database import Database, database, forget
from authsome.store.pg.vault import PgTransaction, PgVault

__all__ = ["Database", "PgAuditLog", "PgTransaction", "PgVault", "changes", "database", "forget", "providers"]
