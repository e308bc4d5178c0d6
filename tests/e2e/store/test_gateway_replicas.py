"""Two `authsome gateway serve` replicas (two homes holding one master key) on one PostgreSQL store: an agent created
on one is served by both, its revocation on one reaches the other within a second, a replica killed with SIGKILL
leaves the other serving, and the audit trail both wrote verifies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.e2e.gateway.conftest import AUTHSOME, OPENAI_KEY, Gateway, _pump, client_env, curl, run_client
from tests.e2e.proxy import conftest as proxy_tests
from tests.e2e.proxy.conftest import HOSTS, StandIn

pytestmark = pytest.mark.e2e

test_ca = proxy_tests.test_ca
test_ca_file = proxy_tests.test_ca_file
tls_server = proxy_tests.tls_server
OPENAI_MODELS = "https://api.openai.com/v1/models"


@pytest.fixture
def replica_env(
    pg_url: str, authsome_home: Path, tls_server: StandIn, test_ca_file: Path, tmp_path: Path
) -> Callable[[Path], dict[str, str]]:
    """The environment of a replica with its own home: the shared database, the stand-ins mapped in and trusted."""
    resolve = ",".join(f"{h}:443=127.0.0.1:{tls_server.port}" for h in HOSTS)
    user_home = tmp_path / "user-home"  # one proxy CA for the fleet (~/.mitmproxy), as an operator would mount it
    user_home.mkdir()

    def env(home: Path) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(user_home),
            "AUTHSOME_HOME": str(home),
            "AUTHSOME_KEY_SOURCE": "file",
            "AUTHSOME_STORE_URL": pg_url,
            "AUTHSOME_TEST_RESOLVE": resolve,
            "SSL_CERT_FILE": str(test_ca_file),
        }

    return env


@pytest.fixture
def start_replica() -> Iterator[Callable[[dict[str, str]], Gateway]]:
    started: list[Gateway] = []

    def start(env: dict[str, str]) -> Gateway:
        process = subprocess.Popen(
            [AUTHSOME, "gateway", "serve", "--listen", "127.0.0.1:0", "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        gateway = Gateway(process, env, Path(env["AUTHSOME_HOME"]))
        started.append(gateway)
        threading.Thread(target=_pump, args=(process.stderr, gateway.events), daemon=True).start()
        gateway.listen = gateway.wait_for(lambda e: e.get("event") in ("listening", "text"), 60).get("listen", "")
        assert gateway.listen, f"the gateway did not start: {gateway.seen}"
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(10)


def via(gateway: Gateway, agent_env: dict[str, str]) -> dict[str, str]:
    """The agent's environment pointed at ``gateway`` (agent env names the replica it was asked on)."""
    out = dict(agent_env)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        if name in out:
            out[name] = out[name].rsplit(":", 1)[0] + f":{gateway.port}"
    return out


def status(env: dict[str, str]) -> str:
    res = run_client(curl(OPENAI_MODELS), client_env(env))
    return res.out.strip()


def test_two_gateway_replicas_share_agents_and_the_trail(
    replica_env: Callable[[Path], dict[str, str]],
    start_replica: Callable[[dict[str, str]], Gateway],
    authsome_home: Path,
    tls_server: StandIn,
    tmp_path: Path,
) -> None:
    env_a = replica_env(authsome_home)
    login = subprocess.run(
        [AUTHSOME, "login", "openai"], env={**env_a, "OPENAI_API_KEY": OPENAI_KEY}, capture_output=True, text=True
    )
    assert login.returncode == 0, login.stderr
    home_b = tmp_path / "replica-b"
    home_b.mkdir(mode=0o700)
    shutil.copy2(authsome_home / "master.key", home_b / "master.key")
    one, two = start_replica(env_a), start_replica(replica_env(home_b))

    token = one.agent("ci", "--provider", "openai")
    agent_env = one.agent_env("ci", token)
    tls_server.seen.clear()
    assert status(via(one, agent_env)) == "200" and status(via(two, agent_env)) == "200"
    assert [s.headers.get("authorization") for s in tls_server.seen] == [f"Bearer {OPENAI_KEY}"] * 2

    # Revoked on one replica: refused by the other within its one-second recheck.
    assert two.cli("agent", "revoke", "ci").code == 0
    revoked_at = time.monotonic()
    served_ci = 2
    while status(via(one, agent_env)) == "200":
        served_ci += 1
        assert time.monotonic() - revoked_at < 3, "replica one still serves a revoked agent"
    assert time.monotonic() - revoked_at < 1.6  # its one-second recheck, and one read of the database
    refused = run_client(["curl", "-sS", "-v", "-o", "/dev/null", OPENAI_MODELS], client_env(via(one, agent_env)))
    assert "407 authsome: agent ci was revoked" in refused.err

    # One replica killed: the other keeps serving.
    fresh = two.agent("ci2", "--provider", "openai")
    fresh_env = two.agent_env("ci2", fresh)
    one.process.send_signal(signal.SIGKILL)
    one.process.wait(10)
    assert status(via(two, fresh_env)) == "200"
    assert two.stop() == 0
    verified = two.cli("log", "--verify", "--json")
    assert verified.code == 0 and verified.json()["ok"], verified.out
    served = [
        (r["agent"], r["decision"])
        for r in two.cli("log", "--json").json()["records"]
        if r["event"] == "request" and r.get("status") == 200
    ]  # both replicas' records, the killed one's included
    assert sorted(served) == [("ci", "injected")] * served_ci + [("ci2", "injected")]
