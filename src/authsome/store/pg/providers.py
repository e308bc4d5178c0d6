"""Custom providers in PostgreSQL: the rows of ``authsome_providers`` are the database's ``providers/`` directory.

A provider file is data, not a secret, and the registry validates it wherever it comes from: each process copies the
rows into a private directory of its home (:func:`sync`, at its first use of the registry) and the registry reads
that directory as it reads a local home's. ``authsome register`` and ``remove`` write the row (:func:`put`,
:func:`delete`) and notify (:mod:`authsome.store.pg.changes`): a running gateway copies the rows again when told, and
every new command copies them at its start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

from authsome.paths import ensure_private_dir, write_private_file
from authsome.store.pg.changes import notify_provider
from authsome.store.pg.database import Database

SUFFIX = ".json"


def local_dir(home_root: Path, db: Database) -> Path:
    """This home's private directory for ``db`` (its copy of the providers), one per database."""
    digest = hashlib.sha256(db.where.encode()).hexdigest()[:16]
    return home_root / "shared" / digest


def mirror_dir(home_root: Path, db: Database) -> Path:
    """Where this home keeps its copy of ``db``'s providers."""
    return local_dir(home_root, db) / "providers"


def sync(db: Database, directory: Path) -> Path:
    """Make ``directory`` hold exactly the database's provider files (0600, written atomically); returns it."""
    with db.connection() as conn:
        rows = conn.execute("SELECT name, body FROM authsome_providers").fetchall()
    wanted = {f"{name}{SUFFIX}": str(body).encode() for name, body in rows}
    ensure_private_dir(directory.parent.parent)
    ensure_private_dir(directory.parent)
    ensure_private_dir(directory)
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and entry.name not in wanted:
            with contextlib.suppress(FileNotFoundError):  # another process of this home removed it first
                os.unlink(entry.path)
    for name, body in wanted.items():
        path = directory / name
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        if current != body:
            write_private_file(path, body)
    return directory


def put(db: Database, name: str, body: str) -> None:
    """Add or replace one provider file."""
    with db.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO authsome_providers (name, body, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            (name, body, time.time()),
        )
        notify_provider(conn, name)


def delete(db: Database, name: str) -> bool:
    """Remove one provider file; False when there was none."""
    with db.connection() as conn, conn.transaction():
        removed = conn.execute("DELETE FROM authsome_providers WHERE name = %s", (name,)).rowcount > 0
        if removed:
            notify_provider(conn, name)
        return removed


def names(db: Database) -> list[str]:
    with db.connection() as conn:
        return [str(r[0]) for r in conn.execute("SELECT name FROM authsome_providers ORDER BY name").fetchall()]
