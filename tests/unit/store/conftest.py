"""Store fixtures: ``backend`` runs a test once on the local SQLite store and once on a real PostgreSQL database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.pg import PgServer, pg_server, pg_url  # noqa: F401  (registers the fixtures)

from authsome.paths import Home
from authsome.store import keysource
from authsome.store.audit import AuditLog
from authsome.store.backend import RecordStore, open_audit, open_store

FILE_KEY = {"AUTHSOME_KEY_SOURCE": "file"}


@dataclass
class Backend:
    """One backend under test: opens profiles as a process (or a replica) would, and reads what it stored raw."""

    name: str
    home: Home
    url: str | None = None
    _replicas: list[object] = field(default_factory=list)

    def vault(self, profile: str = "default", *, home: Home | None = None, replica: bool = False) -> RecordStore:
        """The records of ``profile``; ``replica``: as another process would see them (its own pools and locks)."""
        home = home or self.home
        loader = lambda: keysource.select(home, FILE_KEY)  # noqa: E731
        if self.url is None or not replica:
            return open_store(home, profile, loader, self.url)
        from authsome.store import pg

        db = pg.Database(self.url)
        self._replicas.append(db)
        return pg.PgVault(db, profile, loader)

    def raw(self) -> list[tuple[str, str, str]]:
        """Every stored record as (profile, key, text), straight from the files or the database."""
        if self.url is None:
            out = []
            for path in sorted((self.home.root / "profiles").glob("*/store.db")):
                with sqlite3.connect(path) as conn:
                    out += [(path.parent.name, k, v) for k, v in conn.execute("SELECT key, value FROM records")]
            return out
        import psycopg

        with psycopg.connect(self.url) as conn:
            return [
                (str(p), str(k), str(v))
                for p, k, v in conn.execute("SELECT profile, key, value FROM authsome_records ORDER BY 1, 2")
            ]

    def raw_set(self, profile: str, key: str, text: str) -> None:
        """Overwrite a record's stored text behind the store's back (what tampering looks like)."""
        if self.url is None:
            with sqlite3.connect(self.home.root / "profiles" / profile / "store.db") as conn:
                conn.execute("UPDATE records SET value = ? WHERE key = ?", (text, key))
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("UPDATE authsome_records SET value = %s WHERE profile = %s AND key = %s", (text, profile, key))

    def audit(self, vault: RecordStore) -> AuditLog:
        return open_audit(self.home, vault)

    def audit_lines(self, profile: str = "default") -> list[str]:
        """The stored audit lines, oldest first."""
        if self.url is None:
            path = self.home.root / "profiles" / profile / "audit.jsonl"
            return path.read_text().splitlines() if path.exists() else []
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT line FROM authsome_audit WHERE profile = %s ORDER BY seq", (profile,))
            return [str(r[0]) for r in rows]

    def set_audit_lines(self, lines: list[str], profile: str = "default") -> None:
        """Replace the stored trail behind the store's back (what tampering looks like)."""
        if self.url is None:
            (self.home.root / "profiles" / profile / "audit.jsonl").write_text("".join(f"{x}\n" for x in lines))
            return
        import json

        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            conn.execute("DELETE FROM authsome_audit WHERE profile = %s", (profile,))
            for n, line in enumerate(lines, 1):
                seq = json.loads(line).get("seq", n) if line.startswith("{") else n
                conn.execute("INSERT INTO authsome_audit VALUES (%s, %s, %s)", (profile, seq, line))

    def close(self) -> None:
        for db in self._replicas:
            db.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test once per backend; both with a file master key in a fresh home."""
    home = Home.resolve(tmp_path / "home")
    if request.param == "sqlite":
        yield Backend("sqlite", home)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.new_database()
    found = Backend("postgresql", home, url)
    try:
        yield found
    finally:
        found.close()
        from authsome.store import pg

        pg.forget(url)
        server.drop_database(url)
