"""What ``authsome doctor`` learns about a store database, only reading: reachable, schema version, which master key
sealed it, and whether a given key opens every record (each profile's, secrets included)."""

from __future__ import annotations

from dataclasses import dataclass, field

from authsome.store.backend import RecordDamaged, parse, unseal
from authsome.store.pg import schema
from authsome.store.pg.database import Database, database


@dataclass
class Inspection:
    where: str
    version: int
    latest: int = schema.LATEST
    key_id: str | None = None
    profiles: dict[str, int] = field(default_factory=dict)  # profile → records
    audit_records: int = 0
    providers: int = 0


def inspect(url: str) -> Inspection:
    """Connect once (no pool, nothing migrated or written) and read the schema version, key id and counts;
    :class:`~authsome.errors.StoreUnavailable` when the database cannot be reached."""
    db = database(url)
    with db.connect() as conn, db.errors():
        found = Inspection(db.where, schema.version(conn))
        if found.version == 0:
            return found
        row = conn.execute("SELECT value FROM authsome_meta WHERE name = 'key_id'").fetchone()
        found.key_id = str(row[0]) if row else None
        for profile, count in conn.execute("SELECT profile, count(*) FROM authsome_records GROUP BY 1 ORDER BY 1"):
            found.profiles[str(profile)] = int(count)
        found.audit_records = int((conn.execute("SELECT count(*) FROM authsome_audit").fetchone() or (0,))[0])
        found.providers = int((conn.execute("SELECT count(*) FROM authsome_providers").fetchone() or (0,))[0])
    return found


def damaged_records(db: Database, key: bytes) -> tuple[int, list[str]]:
    """How many records ``key`` opens, and every one it does not (``profile: key: reason``), reading only."""
    opened, damaged = 0, []
    with db.connect() as conn, db.errors():
        rows = conn.execute("SELECT profile, key, value FROM authsome_records ORDER BY 1, 2").fetchall()
    for profile, record_key, value in rows:
        try:
            doc = parse(record_key, value)
            for name in doc.get("secrets") or {}:
                unseal(lambda: key, profile, record_key, doc, name)
            opened += 1
        except RecordDamaged as exc:
            damaged.append(f"{profile}: {record_key}: {exc.reason}")
    return opened, damaged
