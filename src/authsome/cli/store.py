"""``authsome store …``: operations on the store itself (parse, call the api, render)."""

from __future__ import annotations

import click

from authsome.cli.main import api, common_options, out
from authsome.errors import UsageError


@click.group("store")
def store_group() -> None:
    """The store: this home's SQLite files, or a PostgreSQL database shared by gateway replicas."""


@store_group.command("migrate")
@click.option("--from", "source", metavar="STORE", help="home, sqlite:PATH or postgresql://… (default: see below).")
@click.option("--to", "destination", metavar="STORE", help="home, sqlite:PATH or postgresql://… (default: see below).")
@click.option("--from-home", type=click.Path(file_okay=False), help="Same as --from sqlite:DIR.")
@click.option("--to-home", type=click.Path(file_okay=False), help="Same as --to sqlite:DIR.")
@common_options
def migrate(source: str | None, destination: str | None, from_home: str | None, to_home: str | None) -> None:
    """Copy every profile's records and audit trail and the custom providers to an empty store, then verify the copy.

    By default from this home to the configured store (--store or AUTHSOME_STORE_URL), or from the configured store
    when --to is a home. Nothing is decrypted to copy it; this home's master key must open every record. A database
    URL on the command line must not hold a password (use PGPASSWORD, ~/.pgpass or AUTHSOME_STORE_URL).
    """
    if (from_home and source) or (to_home and destination):
        raise UsageError("--from/--to and --from-home/--to-home name the same thing", "use one of each")
    o = out()
    report = api().migrate_store(
        source or (f"sqlite:{from_home}" if from_home else None),
        destination or (f"sqlite:{to_home}" if to_home else None),
    )

    def human() -> None:
        click.echo(
            f"copied {report['records']} records, {report['audit_records']} audit records and {report['providers']}"
            f" providers of {report['profiles']} profiles from {report['source']} to {report['destination']}"
        )
        trails = ", ".join(
            f"{p}: {t['records']} records {'intact' if t['intact'] else 'NOT intact (as in the source)'}"
            for p, t in report["audit"].items()
        )
        click.echo(
            "verified: the same bytes, every secret opens with this home's key"
            + (f"; audit {trails}" if trails else "")
        )

    o.emit(report, human)
