"""Several machines on one PostgreSQL store, through the real command: what one writes the others use, one master key
for all, a single refresh across replicas, and moving a home into the database and back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.e2e.store.conftest import Replica, share_key
from tests.oauth_server.fixtures import SHORT_CLIENT, OAuthServer
from tests.pg import PgServer

from authsome import Authsome

pytestmark = pytest.mark.e2e

KEY = "sk-shared-0123456789abcdefghijklmnop"
ACME = (
    '{"name": "acme", "display_name": "Acme", "auth_type": "api_key", "flow": "api_key", "host_url": "api.acme.test"}'
)


def dump(url: str) -> str:
    """Everything the database holds, as text."""
    with psycopg.connect(url) as conn:
        parts = [
            str(row)
            for table in ("records", "audit", "providers", "meta")
            for row in conn.execute(f"SELECT * FROM authsome_{table}")
        ]
    return "\n".join(parts)


def test_replicas_share_connections_providers_agents_and_the_trail(
    replicas: Callable[[int], list[Replica]], tmp_path: Path
) -> None:
    one, two = replicas(2)
    assert one("login", "openai", OPENAI_API_KEY=KEY).code == 0
    share_key([one, two])
    got = two("get", "openai", "--field", "api_key", "--show-secret")
    assert got.code == 0 and got.out.strip() == KEY
    (tmp_path / "acme.json").write_text(ACME)
    assert one("register", str(tmp_path / "acme.json")).code == 0
    assert "acme" in [p["name"] for p in two("list", "--json").json()["providers"]]
    created = two("agent", "create", "ci", "--provider", "openai", "--json")
    assert created.code == 0, created.err
    token = created.json()["token"]
    assert one("agent", "revoke", "ci").code == 0
    assert [a["state"] for a in two("agent", "list", "--json").json()["agents"]] == ["revoked"]
    assert two("remove", "acme").code == 0
    assert "acme" not in [p["name"] for p in one("list", "--json").json()["providers"]]
    held = dump(one.url)
    assert KEY not in held and token not in held  # sealed, and only the token's hash
    who = two("whoami", "--json").json()
    assert who["profiles"] == ["default"] and who["store"].startswith("postgresql://authsome_test@127.0.0.1:")
    events = [r["event"] for r in one("log", "--json").json()["records"]]
    assert events[:2] == ["login", "reveal"] and events.count("agent") == 2
    verified = two("log", "--verify", "--json")
    assert verified.code == 0 and verified.json()["ok"] and verified.json()["records"] == len(events)


def test_a_replica_with_another_master_key_is_refused(replicas: Callable[[int], list[Replica]]) -> None:
    one, two = replicas(2)
    assert one("login", "openai", OPENAI_API_KEY=KEY).code == 0
    before = dump(one.url)
    refused = two("login", "anthropic", ANTHROPIC_API_KEY="sk-ant-" + "x" * 30)
    assert refused.code == 7 and "sealed with another master key" in refused.err and "master.key" in refused.err
    assert dump(one.url) == before
    assert two("get", "openai", "--field", "api_key", "--show-secret").code == 7


def test_a_password_in_store_on_the_command_line_is_refused(authsome_home: Path, pg_server: PgServer) -> None:
    url = pg_server.url()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("authsome")), "--store", url, "list"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert proc.returncode == 2 and "holds a password" in proc.stderr and "PGPASSWORD" in proc.stderr
    assert pg_server.password not in proc.stderr + proc.stdout


def test_migrate_a_home_into_the_database_and_back(
    pg_url: str, pg_server: PgServer, authsome_home: Path, tmp_path: Path
) -> None:
    local = Replica(authsome_home, "")
    env = {"AUTHSOME_STORE_URL": ""}
    assert local("login", "openai", OPENAI_API_KEY=KEY, **env).code == 0
    assert local("--profile", "work", "login", "openai", OPENAI_API_KEY=KEY + "-work", **env).code == 0
    (tmp_path / "acme.json").write_text(ACME)
    assert local("register", str(tmp_path / "acme.json"), **env).code == 0
    no_password = pg_url.replace(f":{pg_server.password}@", "@")
    moved = local("store", "migrate", "--to", no_password, "--json", PGPASSWORD=pg_server.password, **env)
    assert moved.code == 0, moved.err
    report = moved.json()
    assert (report["profiles"], report["records"], report["providers"]) == (2, 4, 1) and report["verified"]
    assert report["audit"] == {"default": {"intact": True, "records": 1}, "work": {"intact": True, "records": 1}}
    shared = Replica(authsome_home, pg_url)
    assert (
        shared("--profile", "work", "get", "openai", "--field", "api_key", "--show-secret").out.strip() == KEY + "-work"
    )
    doctor = {c["check"]: c for c in shared("doctor", "--json").json()["checks"]}
    assert doctor["store database"]["ok"] and "schema version 1 (current)" in doctor["store database"]["detail"]
    assert doctor["database key"]["ok"] and "opens all 4 records" in doctor["database key"]["detail"]
    again = local("store", "migrate", "--to", no_password, PGPASSWORD=pg_server.password, **env)
    assert again.code == 2 and "is not empty" in again.err

    back = tmp_path / "back-home"
    back.mkdir(mode=0o700)
    (back / "master.key").write_bytes((authsome_home / "master.key").read_bytes())
    returned = shared("store", "migrate", "--to-home", str(back), "--json")
    assert returned.code == 0, returned.err
    assert returned.json()["audit"]["work"] == {"intact": True, "records": 2}  # with the `get` made on the database
    there = Replica(back, "")
    assert there("--profile", "work", "get", "openai", "--field", "api_key", "--show-secret", **env).out.strip() == (
        KEY + "-work"
    )
    assert "acme" in [p["name"] for p in there("list", "--json", **env).json()["providers"]]
    assert there("log", "--verify", **env).code == 0


HEADERS_SCRIPT = (
    "import sys, time\n"
    "from authsome import Authsome\n"
    "start = float(sys.argv[1])\n"
    "time.sleep(max(0.0, start - time.time()))\n"
    "print(Authsome().headers_for('testidp')['Authorization'])\n"
)


def test_ten_replicas_refresh_a_rotating_token_once(
    replicas: Callable[[int], list[Replica]],
    browser_login: Callable[..., Any],
    oauth_server: OAuthServer,
    testidp_file: Path,
) -> None:
    fleet = replicas(10)
    auth = Authsome(fleet[0].home, store_url=fleet[0].url)
    auth.register(testidp_file)
    browser_login(auth, SHORT_CLIENT)
    share_key(fleet)
    old = auth.store.load("testidp", "default")
    assert old.expires_at is not None
    time.sleep(max(0.0, old.expires_at - time.time()) + 0.5)  # the server's clock decides expiry: wait it out
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HEADERS_SCRIPT, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=replica.env(),
        )
        for replica in fleet
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    new = auth.store.load("testidp", "default")
    assert new.access_token is not None and new.access_token != old.access_token
    assert {out.strip() for out, _ in results} == {f"Bearer {new.access_token.reveal()}"}
    assert [r["ok"] for r in auth.log(provider="testidp") if r["event"] == "refresh"] == [True]
    assert old.refresh_token is not None and new.refresh_token != old.refresh_token  # rotated, once
    assert oauth_server.introspect(old.refresh_token.reveal())["active"] is False
    assert auth.verify_log().ok
