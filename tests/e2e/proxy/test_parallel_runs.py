"""Several `authsome run`s started together on a fresh home: one proxy CA, every child verifies, all audited.

In gateway mode the user's gateway (`authsome gateway start`) serves them all, each run as an agent of its own."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from authsome import Authsome
from authsome.proxy import ca

from .conftest import GATEWAY, HOSTS, StandIn, base_env

pytestmark = pytest.mark.e2e

RUNS = 8
KEY = "sk-parallel-0123456789abcdef"
AUTHSOME = str(Path(sys.executable).with_name("authsome"))
Cli = Callable[..., subprocess.CompletedProcess[str]]
# Each child verifies the intercepted host the way its libraries do: requests (a new context per call), httpx, urllib.
CHILD = """
import json, urllib.request
import httpx, requests
url = "https://api.openai.com/v1/models"
codes = [requests.get(url, timeout=30).status_code for _ in range(2)]
codes += [httpx.get(url, timeout=30).status_code, urllib.request.urlopen(url, timeout=30).status]
print(json.dumps(codes))
"""


def test_parallel_first_runs_share_one_ca(
    tls_server: StandIn, test_ca_file: Path, tmp_path: Path, authsome_home: Path, mode: str
) -> None:
    Authsome(env={"OPENAI_API_KEY": KEY}).login("openai")
    tls_server.seen.clear()
    home = tmp_path / "user"  # a fresh HOME: no ~/.mitmproxy yet, no cached trust
    home.mkdir()
    env = base_env(
        {
            "HOME": str(home),
            "AUTHSOME_HOME": str(authsome_home),
            "AUTHSOME_KEY_SOURCE": "file",
            "AUTHSOME_TEST_RESOLVE": ",".join(f"{h}:443=127.0.0.1:{tls_server.port}" for h in HOSTS),
        }
    )
    trust = ["--upstream-ca", str(test_ca_file)]  # the run's own proxy, or the gateway, trusts the stand-in's CA
    command = [AUTHSOME, "run", *([] if mode == GATEWAY else trust), "--", sys.executable, "-c", CHILD]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AUTHSOME, *args], env=env, capture_output=True, text=True, timeout=120)

    def one(_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    with users_gateway(cli, mode, trust):
        check_parallel_runs(one, cli, tls_server, home, mode)


@contextlib.contextmanager
def users_gateway(cli: Cli, mode: str, trust: list[str]) -> Iterator[None]:
    """In gateway mode, `authsome gateway start` before the runs and `gateway stop` after the checks."""
    if mode != GATEWAY:
        yield
        return
    started = cli("gateway", "start", "--listen", "127.0.0.1:0", *trust)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield
    finally:
        assert cli("gateway", "stop").returncode == 0


def check_parallel_runs(one: Cli, cli: Cli, tls_server: StandIn, home: Path, mode: str) -> None:
    with ThreadPoolExecutor(RUNS) as pool:
        done = list(pool.map(one, range(RUNS)))
    failures = [p.stderr[-500:] for p in done if p.returncode != 0]
    assert failures == []  # before: some children failed with CERTIFICATE_VERIFY_FAILED
    assert [p.stderr for p in done if "internal error in the proxy" in p.stderr] == []  # a bug in the proxy
    assert [json.loads(p.stdout) for p in done] == [[200, 200, 200, 200]] * RUNS
    assert [s.headers.get("authorization") for s in tls_server.seen] == [f"Bearer {KEY}"] * 4 * RUNS
    confdir = home / ".mitmproxy"
    key_cert = ca.pem_certs((confdir / ca.CA_KEY_NAME).read_bytes())
    assert ca.pem_certs((confdir / ca.CA_CERT_NAME).read_bytes()) == key_cert  # one CA, its files agree
    verify = cli("log", "--verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["records"] == 4 * RUNS + 1  # every request, and the login
    requests = [r for r in json.loads(cli("log", "--json").stdout)["records"] if r["event"] == "request"]
    runs = {(r["run_id"], r["command"], r.get("agent")) for r in requests}  # each run's records name it
    assert len(runs) == RUNS and {command for _, command, _ in runs} == {Path(sys.executable).name}
    agents = {agent for _, _, agent in runs}
    if mode == GATEWAY:  # served by the gateway, each run as an agent of its own
        assert len(agents) == RUNS and all(str(agent).startswith("run.") for agent in agents)
    else:
        assert agents == {None}
    assert os.listdir(home / ".cache" / "authsome" / "trust") != []
