"""What one replica changes, the other gateway (running since before) applies at once: a custom provider registered and
logged in, a connection logged in again, an agent revoked. Each is measured from the command's exit to the first
request through the other replica that shows it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest
from tests.e2e.store.fleet import ACME, AgentClient, Fleet, Upstream, agent
from tests.pg import PgServer

from authsome.store.pg.changes import RETRY

pytestmark = pytest.mark.e2e

KEY = "sk-first-0123456789abcdefghij"
NEW_KEY = "sk-second-0123456789abcdefghij"
ACME_KEY = "acme-0123456789abcdefghij"
MODELS = "https://api.openai.com/v1/models"
BOUND = 1.0  # seconds: what the test allows (the figures it prints are what docs/store.md quotes)


def until(check: Callable[[], bool], limit: float = 10.0) -> float:
    """Seconds until ``check()`` first holds (each try a new connection through the replica)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < limit, f"not seen within {limit} s"
    return time.monotonic() - start


def get(bot: AgentClient, url: str) -> int | None:
    """One request on a new connection: its status, or None when the proxy refused the tunnel."""
    try:
        with bot.client(timeout=10) as http:
            return http.get(url).status_code
    except httpx.ProxyError:
        return None


def test_changes_on_one_replica_reach_the_other_at_once(fleet: Fleet, api: Upstream) -> None:
    assert fleet.cli(0, "login", "openai", OPENAI_API_KEY=KEY).code == 0
    fleet.home(1)  # the fleet's key, copied
    one, two = fleet.start(0), fleet.start(1)
    wild = replace(agent(fleet, 0, one, "wild"), gateway=two)  # every connected provider, through replica two
    bot = replace(agent(fleet, 0, one, "bot", "--provider", "openai"), gateway=two)
    assert get(wild, "https://api.acme.test/v1/ping") == 200
    assert api.last_authorization() is None  # no such provider yet: relayed untouched
    figures: dict[str, float] = {}

    # A custom provider registered and logged in on replica one: replica two routes it.
    acme = fleet.root / "acme.json"
    acme.write_text(json.dumps(ACME))
    assert fleet.cli(0, "register", str(acme)).code == 0
    assert fleet.cli(0, "login", "acme", ACME_API_KEY=ACME_KEY).code == 0
    figures["provider"] = until(
        lambda: get(wild, "https://api.acme.test/v1/ping") == 200 and ACME_KEY in (api.last_authorization() or "")
    )

    # A connection logged in again on replica one: replica two injects the new key.
    assert get(bot, MODELS) == 200 and api.last_authorization() == f"Bearer {KEY}"
    assert fleet.cli(0, "login", "openai", "--force", OPENAI_API_KEY=NEW_KEY).code == 0
    figures["connection"] = until(lambda: get(bot, MODELS) == 200 and api.last_authorization() == f"Bearer {NEW_KEY}")

    # An agent revoked on replica one: replica two refuses it.
    assert fleet.cli(0, "agent", "revoke", "bot").code == 0
    figures["agent"] = until(lambda: get(bot, MODELS) is None)

    print("seen by the other replica after (s):", {k: round(v, 3) for k, v in figures.items()})
    assert all(seconds < BOUND for seconds in figures.values()), figures
    assert get(wild, MODELS) == 200  # the other agent still served


def test_a_replica_that_lost_the_database_catches_up(fleet: Fleet, api: Upstream, pg_server: PgServer) -> None:
    assert fleet.cli(0, "login", "openai", OPENAI_API_KEY=KEY).code == 0
    fleet.home(1)
    one, two = fleet.start(0), fleet.start(1)
    wild = replace(agent(fleet, 0, one, "wild"), gateway=two)
    assert get(wild, "https://api.acme.test/v1/ping") == 200
    database = fleet.url.rsplit("/", 1)[1]
    pg_server.admin(  # the database drops every replica's listening connection: what is said meanwhile is lost
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND query LIKE 'LISTEN authsome_changes%'"
    )
    acme = fleet.root / "acme.json"
    acme.write_text(json.dumps(ACME))
    assert fleet.cli(0, "register", str(acme)).code == 0
    assert fleet.cli(0, "login", "acme", ACME_API_KEY=ACME_KEY).code == 0
    took = until(
        lambda: get(wild, "https://api.acme.test/v1/ping") == 200 and ACME_KEY in (api.last_authorization() or "")
    )
    assert took < RETRY + 1.5  # reconnected, then read everything again
