"""An agent in another network namespace (what a container is) uses the gateway with only what `agent env` printed.

The test makes the namespace and a veth pair to it (root and iproute2 needed; skipped otherwise): the namespace's
only way out is the gateway, which listens on the host's end of the pair. Its clients get nothing but the variables
`authsome agent env` printed (and PATH); they reach the stand-in API through the gateway, credential injected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.e2e.proxy.conftest import StandIn

from .conftest import OPENAI_KEY, REAL_SECRETS, StartGateway, login_all

pytestmark = pytest.mark.e2e

SUBNET = "10.213.{}.{}"


@dataclass(frozen=True)
class Namespace:
    name: str
    host_ip: str
    agent_ip: str

    def run(self, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
        """``command`` inside the namespace, with exactly ``env`` as its environment."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, "env", "-i", *(f"{k}={v}" for k, v in env.items()), *command],
            capture_output=True,
            text=True,
            timeout=60,
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (`ip`) to make a network namespace")
    tag = os.getpid() % 250 + 1
    name, host_if, agent_if = f"authsome-gw-{os.getpid()}", f"asgw{tag}h", f"asgw{tag}a"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", agent_if)
        _ip("link", "set", agent_if, "netns", name)
        host_ip, agent_ip = SUBNET.format(tag, 1), SUBNET.format(tag, 2)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{agent_ip}/30", "dev", agent_if)
        _ip("netns", "exec", name, "ip", "link", "set", agent_if, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield Namespace(name, host_ip, agent_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_an_agent_in_another_network_namespace(
    netns: Namespace, start_gateway: StartGateway, tls_server: StandIn
) -> None:
    login_all()
    gateway = start_gateway(listen=f"{netns.host_ip}:0")
    warning = gateway.wait_for(lambda e: e.get("event") == "warning")
    assert "other machines may reach" in warning["message"]
    token = gateway.agent("alice", "--provider", "openai")
    printed = gateway.cli(
        "agent", "env", "alice", "--token-stdin", "--gateway", gateway.listen, "--format", "env", input=token
    )
    assert printed.code == 0, printed.err
    env = dict(line.split("=", 1) for line in printed.out.splitlines())
    assert env["HTTPS_PROXY"] == f"http://alice:{token}@{netns.host_ip}:{gateway.port}"
    env["PATH"] = os.environ["PATH"]

    # nothing else is reachable from there: not the stand-in, not the gateway's own loopback
    direct = netns.run(env, "curl", "-sS", "--noproxy", "*", "-m", "5", f"https://127.0.0.1:{tls_server.port}/")
    assert direct.returncode != 0

    tls_server.seen.clear()
    curl = netns.run(env, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "https://api.openai.com/v1/models")
    assert curl.stdout == "200", curl.stderr
    sdk = netns.run(env, sys.executable, "-c", "from openai import OpenAI; print(OpenAI().models.list().data[0].id)")
    assert sdk.returncode == 0 and sdk.stdout.strip() == "gpt-standin", sdk.stderr
    assert [s.headers["authorization"] for s in tls_server.seen] == [f"Bearer {OPENAI_KEY}"] * 2
    record = gateway.wait_for(lambda e: e.get("event") == "request" and e.get("decision") == "injected")
    assert record["agent"] == "alice"
    assert not any(secret in curl.stdout + curl.stderr + sdk.stdout + sdk.stderr for secret in REAL_SECRETS)

    # its token is all it has: revoked, it has nothing
    assert gateway.cli("agent", "revoke", "alice").code == 0
    for _ in range(50):  # the gateway re-reads the agent within a second
        again = netns.run(env, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "https://api.openai.com/")
        if "407" in again.stdout + again.stderr:
            break
    assert "407" in again.stdout + again.stderr
    gateway.wait_for(lambda e: e.get("event") == "denied" and e.get("agent") == "alice")
