"""``authsome store migrate``: copy a whole store between a home's SQLite files and a PostgreSQL database (either way,
or database to database), then verify the copy.

What is copied, as it is (no secret is decrypted to copy it): every profile's records (their sealed secrets are bound
to profile, record and field, not to a backend), every profile's audit trail with its chain, and the custom providers.
The destination must be empty. The master key is that of the home the command runs in: every record of the source
must open with it (checked before anything is written), and a database remembers it (``key_id``).

Verified after the copy: the destination holds exactly the source's records, trail lines and provider files, byte for
byte; every sealed secret there opens with the key; every profile's audit chain verifies as it did in the source.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authsome.errors import StoreUnavailable, UsageError
from authsome.paths import Home, ensure_private_dir, private_umask, write_private_file
from authsome.store.backend import RecordStore, open_audit, open_store, parse

if TYPE_CHECKING:
    from authsome.store import keysource

Rows = list[tuple[str, str]]  # (key, text) of records, sorted by key


@dataclass
class Snapshot:
    """Everything a store holds, as stored."""

    records: dict[str, Rows] = field(default_factory=dict)  # profile → rows
    audit: dict[str, list[str]] = field(default_factory=dict)  # profile → lines (no newline)
    providers: dict[str, str] = field(default_factory=dict)  # name → file text

    def counts(self) -> dict[str, int]:
        return {
            "profiles": len(set(self.records) | set(self.audit)),
            "records": sum(len(rows) for rows in self.records.values()),
            "audit_records": sum(len(lines) for lines in self.audit.values()),
            "providers": len(self.providers),
        }

    def empty(self) -> bool:
        return not any(self.counts()[k] for k in ("records", "audit_records", "providers"))


@dataclass(frozen=True)
class Side:
    """One end of a migration: a home's files (``url`` None) or a database."""

    home: Home
    url: str | None = None

    def label(self) -> str:
        if self.url is None:
            return f"sqlite:{self.home.root}"
        from authsome.store.pg.database import where

        return where(self.url)


def parse_side(spec: str, here: Home) -> Side:
    """``home`` (this home), ``sqlite:PATH`` (the home at PATH) or ``postgresql://…``."""
    if spec == "home":
        return Side(here)
    if spec.startswith("sqlite:"):
        path = spec.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise UsageError("sqlite: needs the path of an authsome home", "e.g. --from sqlite:~/.authsome")
        return Side(Home.locate(Path(os.path.expanduser(path))))
    from authsome.store.backend import check_url

    return Side(here, check_url(spec, on_command_line=True))


# -- reading ----------------------------------------------------------------------------------------------------------
def snapshot(side: Side) -> Snapshot:
    """Everything the side holds (nothing is created)."""
    return _read_database(side.url) if side.url else _read_home(side.home)


def _read_home(home: Home) -> Snapshot:
    out = Snapshot()
    for profile in home.profiles():
        directory = home.root / "profiles" / profile
        db = directory / "store.db"
        if db.is_file():
            with private_umask():
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'").fetchone()
                rows = conn.execute("SELECT key, value FROM records ORDER BY key").fetchall() if has_table else []
            except sqlite3.DatabaseError as exc:
                raise StoreUnavailable(f"the store {db} is unreadable: {exc}", "restore it from a backup") from None
            finally:
                conn.close()
            if rows:
                out.records[profile] = [(str(k), str(v)) for k, v in rows]
        trail = directory / "audit.jsonl"
        if trail.is_file():
            lines = trail.read_text(encoding="utf-8").split("\n")[:-1]  # a line cut short by a crash is not a record
            if lines:
                out.audit[profile] = lines
    if home.providers_dir.is_dir():
        for entry in sorted(home.providers_dir.iterdir()):
            if entry.is_file() and entry.suffix in (".json", ".jsonc") and not entry.name.startswith("."):
                out.providers[entry.stem] = entry.read_text(encoding="utf-8")
    return out


def _read_database(url: str) -> Snapshot:
    from authsome.store import pg

    out = Snapshot()
    with pg.database(url).connection() as conn:
        for profile, key, value in conn.execute("SELECT profile, key, value FROM authsome_records ORDER BY 1, 2"):
            out.records.setdefault(profile, []).append((key, value))
        for profile, line in conn.execute("SELECT profile, line FROM authsome_audit ORDER BY profile, seq"):
            out.audit.setdefault(profile, []).append(line)
        for name, body in conn.execute("SELECT name, body FROM authsome_providers ORDER BY name"):
            out.providers[name] = body
    return out


# -- writing ----------------------------------------------------------------------------------------------------------
def _write_home(home: Home, data: Snapshot, loader: Callable[[], keysource.KeySource]) -> None:
    import time

    from authsome.store.vault import Vault

    home.ensure()
    for profile, rows in data.records.items():
        with Vault(home.profile_dir(profile), profile, loader).transaction() as txn:
            txn.conn.executemany(
                "INSERT INTO records (key, value, updated_at) VALUES (?, ?, ?)", [(k, v, time.time()) for k, v in rows]
            )
    for profile, lines in data.audit.items():
        write_private_file(home.profile_dir(profile) / "audit.jsonl", "".join(f"{line}\n" for line in lines).encode())
    if data.providers:
        ensure_private_dir(home.providers_dir)
        for name, body in data.providers.items():
            write_private_file(home.providers_dir / f"{name}.json", body.encode("utf-8"))


def _write_database(url: str, data: Snapshot, key_id: str) -> None:
    """Everything in one transaction: the database gets all of it or nothing."""
    import time

    from authsome.store import pg
    from authsome.store.pg.database import wrong_key

    db = pg.database(url)
    now = time.time()
    with db.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("INSERT INTO authsome_meta (name, value) VALUES ('key_id', %s) ON CONFLICT DO NOTHING", (key_id,))
        row = cur.execute("SELECT value FROM authsome_meta WHERE name = 'key_id'").fetchone()
        if row is None or row[0] != key_id:
            raise wrong_key(db.where)
        cur.executemany(
            "INSERT INTO authsome_records (profile, key, value, updated_at) VALUES (%s, %s, %s, %s)",
            [(p, k, v, now) for p, rows in data.records.items() for k, v in rows],
        )
        cur.executemany(
            "INSERT INTO authsome_audit (profile, seq, line) VALUES (%s, %s, %s)",
            [(p, n, line) for p, lines in data.audit.items() for n, line in enumerate(lines, 1)],
        )
        cur.executemany(
            "INSERT INTO authsome_providers (name, body, updated_at) VALUES (%s, %s, %s)",
            [(name, body, now) for name, body in data.providers.items()],
        )


# -- checking ---------------------------------------------------------------------------------------------------------
def _open_every_secret(vault: RecordStore, rows: Rows) -> None:
    """Open every sealed field of ``rows`` with the key; :class:`StoreUnavailable` naming the first that fails."""
    for key, text in rows:
        doc = parse(key, text)
        for name in doc.get("secrets") or {}:
            vault.reveal(key, doc, name)


def _trails(side: Side, profiles: list[str], loader: Callable[[], keysource.KeySource]) -> dict[str, tuple[bool, int]]:
    out = {}
    for profile in profiles:
        result = open_audit(side.home, open_store(side.home, profile, loader, side.url)).verify()
        out[profile] = (result.ok, result.records)
    return out


@dataclass
class Report:
    source: str
    destination: str
    counts: dict[str, int]
    trails: dict[str, tuple[bool, int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            **self.counts,
            "verified": True,
            "audit": {p: {"intact": ok, "records": n} for p, (ok, n) in sorted(self.trails.items())},
        }


def migrate(source: Side, destination: Side, loader: Callable[[], keysource.KeySource]) -> Report:
    """Copy everything from ``source`` to an empty ``destination`` and verify the copy (see the module's doc)."""
    from authsome.store import crypto

    if source.label() == destination.label():
        raise UsageError("the source and the destination are the same store", "name two different stores")
    data = snapshot(source)
    if data.empty():
        raise UsageError(f"{source.label()} holds nothing to migrate", "check --from")
    for profile, rows in data.records.items():  # the key opens the source, before anything is written
        _open_every_secret(open_store(source.home, profile, loader, source.url), rows)
    before = _trails(source, sorted(data.audit), loader)
    found = snapshot(destination) if destination.url or destination.home.root.exists() else Snapshot()
    if not found.empty():
        counts = found.counts()
        raise UsageError(
            f"{destination.label()} is not empty ({counts['records']} records, {counts['audit_records']} audit"
            f" records, {counts['providers']} providers)",
            "migrate into an empty database or a new home",
        )
    if destination.url:
        _write_database(destination.url, data, crypto.key_id(loader().load()))
    else:
        _write_home(destination.home, data, loader)
    copied = snapshot(destination)
    for what, want, got in (
        ("records", data.records, copied.records),
        ("audit trail", data.audit, copied.audit),
        ("providers", data.providers, copied.providers),
    ):
        if want != got:
            raise StoreUnavailable(
                f"the copy in {destination.label()} differs from the source ({what})",
                "report this; the source is intact",
            )
    for profile, rows in copied.records.items():
        _open_every_secret(open_store(destination.home, profile, loader, destination.url), rows)
    after = _trails(destination, sorted(copied.audit), loader)
    if after != before:
        raise StoreUnavailable(
            f"the audit trail in {destination.label()} does not verify as the source's did", "report this"
        )
    return Report(source.label(), destination.label(), data.counts(), after)
