"""Two `authsome gateway serve` replicas (two homes holding one master key) on one PostgreSQL store: an agent created
on one is served by both, its revocation on one reaches the other at once, a replica killed with SIGKILL leaves the
other serving, and the audit trail both wrote verifies."""

from __future__ import annotations

import time

import pytest
from tests.e2e.gateway.conftest import client_env, curl, run_client
from tests.e2e.store.fleet import Fleet, Upstream, kill

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-default-0123456789abcdef"
OPENAI_MODELS = "https://api.openai.com/v1/models"


def status(env: dict[str, str]) -> str:
    return run_client(curl(OPENAI_MODELS), client_env(env)).out.strip()


def test_two_gateway_replicas_share_agents_and_the_trail(fleet: Fleet, api: Upstream) -> None:
    assert fleet.cli(0, "login", "openai", OPENAI_API_KEY=OPENAI_KEY).code == 0
    fleet.home(1)
    one, two = fleet.start(0), fleet.start(1)

    token = one.agent("ci", "--provider", "openai")
    env_one = one.agent_env("ci", token)
    env_two = two.agent_env("ci", token, "--gateway", two.listen)
    api.clear()
    assert status(env_one) == "200" and status(env_two) == "200"  # curl, with what `agent env` printed
    assert [h.authorization for h in api.hits] == [f"Bearer {OPENAI_KEY}"] * 2

    # Revoked on one replica: refused by the other at once (it hears of the change as it commits).
    assert two.cli("agent", "revoke", "ci").code == 0
    revoked_at = time.monotonic()
    served_ci = 2
    while status(env_one) == "200":
        served_ci += 1
        assert time.monotonic() - revoked_at < 3, "replica one still serves a revoked agent"
    assert time.monotonic() - revoked_at < 0.5
    refused = run_client(["curl", "-sS", "-v", "-o", "/dev/null", OPENAI_MODELS], client_env(env_one))
    assert "407 authsome: agent ci was revoked" in refused.err

    # One replica killed: the other keeps serving.
    fresh = two.agent("ci2", "--provider", "openai")
    fresh_env = two.agent_env("ci2", fresh, "--gateway", two.listen)
    kill(one)
    assert status(fresh_env) == "200"
    assert two.stop() == 0
    verified = two.cli("log", "--verify", "--json")
    assert verified.code == 0 and verified.json()["ok"], verified.out
    served = [
        (r["agent"], r["decision"])
        for r in two.cli("log", "--json").json()["records"]
        if r["event"] == "request" and r.get("status") == 200
    ]  # both replicas' records, the killed one's included
    assert sorted(served) == [("ci", "injected")] * served_ci + [("ci2", "injected")]
