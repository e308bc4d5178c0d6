"""What only the PostgreSQL backend does: migrations, the key check, errors that name the database and never its
password, and connections the server dropped."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from tests.pg import PgServer

from authsome.errors import StoreUnavailable
from authsome.models import Credential
from authsome.paths import Home
from authsome.secret import Secret
from authsome.store import keysource, pg
from authsome.store.credentials import CredentialStore
from authsome.store.pg import schema

FILE_KEY = {"AUTHSOME_KEY_SOURCE": "file"}


def store_at(url: str, home: Home, profile: str = "default", db: pg.Database | None = None) -> CredentialStore:
    return CredentialStore(pg.PgVault(db or pg.database(url), profile, lambda: keysource.select(home, FILE_KEY)))


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute("SELECT version FROM authsome_schema ORDER BY version")]


def test_first_use_creates_the_schema(pg_url: str, tmp_path: Path) -> None:
    store = store_at(pg_url, Home.resolve(tmp_path / "home"))
    assert store.connections() == []
    assert versions(pg_url) == [m[0] for m in schema.MIGRATIONS]
    with psycopg.connect(pg_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'authsome_%'")}
    assert tables == {"authsome_schema", "authsome_meta", "authsome_records", "authsome_providers", "authsome_audit"}


def test_replicas_starting_at_once_migrate_once(pg_url: str) -> None:
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                start.wait(10)
                schema.migrate(conn, "test")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert versions(pg_url) == [m[0] for m in schema.MIGRATIONS]


def test_a_schema_from_a_newer_authsome_is_refused_untouched(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        schema.migrate(conn, "test")
        conn.execute("INSERT INTO authsome_schema (version, description) VALUES (%s, 'future')", (schema.LATEST + 1,))
    with pytest.raises(StoreUnavailable, match=f"schema version {schema.LATEST + 1}") as err:
        store_at(pg_url, Home.resolve(tmp_path / "home")).connections()
    assert "upgrade authsome" in (err.value.hint or "")
    assert versions(pg_url)[-1] == schema.LATEST + 1


def test_a_replica_with_another_key_cannot_write(pg_url: str, tmp_path: Path) -> None:
    first = store_at(pg_url, Home.resolve(tmp_path / "one"))
    first.save("openai", "default", Credential(kind="api_key", api_key=Secret("sk-one")))
    stranger = store_at(pg_url, Home.resolve(tmp_path / "two"))  # a new home: a new random master.key
    with pytest.raises(StoreUnavailable, match="sealed with another master key") as err:
        stranger.save("anthropic", "default", Credential(kind="api_key", api_key=Secret("sk-two")))
    assert "master.key" in (err.value.hint or "")
    assert [c.provider for c in first.connections()] == ["openai"]
    # The same key file on another machine: accepted.
    (tmp_path / "two" / "master.key").write_bytes((tmp_path / "one" / "master.key").read_bytes())
    store_at(pg_url, Home.resolve(tmp_path / "two")).save("anthropic", "default", Credential(kind="api_key"))


def test_errors_name_the_database_never_its_password(pg_server: PgServer, tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    wrong = pg_server.url().replace(pg_server.password, "not-the-password-xyz")
    with pytest.raises(StoreUnavailable) as err:
        store_at(wrong, home).connections()
    text = f"{err.value.message} {err.value.hint}"
    assert "password authentication failed" in text and "not-the-password-xyz" not in text
    assert f"postgresql://authsome_test@127.0.0.1:{pg_server.port}/postgres" in text
    with pytest.raises(StoreUnavailable, match="cannot reach the store database") as err:
        store_at("postgresql://u:secret-pw@127.0.0.1:1/db", home).connections()
    assert "secret-pw" not in str(err.value)


def test_a_connection_the_server_dropped_is_replaced(pg_url: str, tmp_path: Path) -> None:
    store = store_at(pg_url, Home.resolve(tmp_path / "home"))
    store.save("openai", "default", Credential(kind="api_key", api_key=Secret("sk-x")))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'authsome' AND pid <> pg_backend_pid()"
        )
    assert store.load("openai", "default").api_key == Secret("sk-x")


def test_profiles_share_one_database(pg_url: str, tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    db = pg.Database(pg_url)
    store_at(pg_url, home, "default", db).save("openai", "default", Credential(kind="api_key", api_key=Secret("a")))
    store_at(pg_url, home, "work", db).save("openai", "default", Credential(kind="api_key", api_key=Secret("b")))
    assert db.profiles() == ["default", "work"]
    db.close()
