"""Several `authsome run`s started together on a fresh home: one proxy CA, every child verifies, all audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from authsome import Authsome
from authsome.proxy import ca

from .conftest import HOSTS, StandIn, base_env

pytestmark = pytest.mark.e2e

RUNS = 8
KEY = "sk-parallel-0123456789abcdef"
AUTHSOME = str(Path(sys.executable).with_name("authsome"))
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
    tls_server: StandIn, test_ca_file: Path, tmp_path: Path, authsome_home: Path
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
    command = [AUTHSOME, "run", "--upstream-ca", str(test_ca_file), "--", sys.executable, "-c", CHILD]

    def one(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(RUNS) as pool:
        done = list(pool.map(one, range(RUNS)))
    failures = [p.stderr[-500:] for p in done if p.returncode != 0]
    assert failures == []  # before: some children failed with CERTIFICATE_VERIFY_FAILED
    assert [json.loads(p.stdout) for p in done] == [[200, 200, 200, 200]] * RUNS
    assert [s.headers.get("authorization") for s in tls_server.seen] == [f"Bearer {KEY}"] * 4 * RUNS
    confdir = home / ".mitmproxy"
    key_cert = ca.pem_certs((confdir / ca.CA_KEY_NAME).read_bytes())
    assert ca.pem_certs((confdir / ca.CA_CERT_NAME).read_bytes()) == key_cert  # one CA, its files agree
    verify = subprocess.run([AUTHSOME, "log", "--verify", "--json"], env=env, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["records"] == 4 * RUNS + 1  # every request, and the login
    assert os.listdir(home / ".cache" / "authsome" / "trust") != []
