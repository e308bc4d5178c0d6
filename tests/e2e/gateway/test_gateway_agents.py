"""Two agents on one gateway, each with real clients (curl, requests, the openai SDK): each gets exactly its rights,
the audit trail names each, and revoking one cuts it off while it is running."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from typing import Any

import pytest
from tests.e2e.proxy.conftest import StandIn

from .conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    OPENAI_WORK_KEY,
    REAL_SECRETS,
    Gateway,
    StartGateway,
    client_env,
    curl,
    login_all,
    py,
    run_client,
)

pytestmark = pytest.mark.e2e

OPENAI_MODELS = "https://api.openai.com/v1/models"
ANTHROPIC_MODELS = "https://api.anthropic.com/v1/models"
SDK = "from openai import OpenAI\nprint(' '.join(m.id for m in OpenAI().models.list()))"
REQUESTS = """
import os, requests, sys
method, url = sys.argv[1], sys.argv[2]
r = requests.request(method, url, json={} if method == "POST" else None, timeout=30)
print(r.status_code, r.headers.get("X-Authsome-Error", "-"))
"""


def auth_of(seen: Any) -> str | None:
    return seen.headers.get("authorization") or seen.headers.get("x-api-key")


def audit(gateway: Gateway, agent: str, count: int) -> list[dict[str, Any]]:
    """The request records of ``agent`` once at least ``count`` are on disk (the gateway writes them in batches)."""
    deadline = time.monotonic() + 20
    while True:
        res = gateway.cli("log", "--agent", agent, "--json")
        assert res.code == 0, res.err
        records = [r for r in res.json()["records"] if r["event"] == "request"]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_two_agents_each_get_exactly_their_rights(start_gateway: StartGateway, tls_server: StandIn) -> None:
    login_all()
    gateway = start_gateway()
    alice = gateway.agent("alice", "--provider", "openai")
    bob = gateway.agent(
        "bob",
        "--provider",
        "anthropic",
        "--connection",
        "openai=work",
        "--allow",
        "anthropic:GET /v1/models",
        "--allow",
        "openai:GET /v1/**",
    )
    alice_env = client_env(gateway.agent_env("alice", alice))
    bob_env = client_env(gateway.agent_env("bob", bob))
    assert alice_env["HTTPS_PROXY"] == f"http://alice:{alice}@127.0.0.1:{gateway.port}"
    assert alice_env["OPENAI_API_KEY"] == "authsome-proxy-managed" and "ANTHROPIC_API_KEY" not in alice_env
    assert not any(secret in str(env) for env in (alice_env, bob_env) for secret in REAL_SECRETS)
    tls_server.seen.clear()

    # alice: openai/default, nothing else
    assert run_client(curl(OPENAI_MODELS), alice_env).out == "200"
    assert auth_of(tls_server.last()) == f"Bearer {OPENAI_KEY}"
    sdk = run_client(py(SDK), alice_env)
    assert sdk.code == 0 and sdk.out.strip() == "gpt-standin", sdk.err
    assert auth_of(tls_server.last()) == f"Bearer {OPENAI_KEY}"
    other = run_client(curl(OPENAI_MODELS, "-H", "X-Authsome-Connection: work"), alice_env)
    assert other.out == "403"  # a connection it was not given
    untouched = run_client([*py(REQUESTS), "GET", ANTHROPIC_MODELS], alice_env)
    assert untouched.out.split()[0] == "200", untouched.err  # tunnelled to the server as is
    assert auth_of(tls_server.last()) is None  # no credential added for a provider alice may not use

    # bob: openai/work and anthropic, within its allow rules
    sdk = run_client(py(SDK), client_env(bob_env, OPENAI_API_KEY="bob-placeholder"))
    assert sdk.code == 0 and sdk.out.strip() == "gpt-standin", sdk.err
    assert auth_of(tls_server.last()) == f"Bearer {OPENAI_WORK_KEY}"
    assert run_client([*py(REQUESTS), "GET", ANTHROPIC_MODELS], bob_env).out.split() == ["200", "-"]
    assert auth_of(tls_server.last()) == ANTHROPIC_KEY
    before = len(tls_server.seen)
    denied = run_client([*py(REQUESTS), "POST", "https://api.anthropic.com/v1/messages"], bob_env)
    assert denied.out.split() == ["403", "policy_denied"]
    assert len(tls_server.seen) == before  # refused by the gateway, never sent upstream
    assert run_client(curl(OPENAI_MODELS, "-X", "DELETE"), bob_env).out == "403"

    # the audit trail names each agent on each of its records
    alice_records = audit(gateway, "alice", 4)
    bob_records = audit(gateway, "bob", 4)
    assert {r["agent"] for r in alice_records} == {"alice"} and {r["agent"] for r in bob_records} == {"bob"}
    decisions = {(r["decision"], r.get("provider"), r.get("connection")) for r in alice_records}
    assert ("injected", "openai", "default") in decisions and ("refused", "openai", "work") in decisions
    assert ("tunnel", None, None) in decisions  # alice's connection to anthropic, relayed untouched
    decisions = {(r["decision"], r.get("provider"), r.get("connection"), r.get("status")) for r in bob_records}
    assert ("injected", "openai", "work", 200) in decisions and ("injected", "anthropic", "default", 200) in decisions
    assert ("refused", "anthropic", "default", 403) in decisions
    # and so do the gateway's own log lines
    line = gateway.wait_for(lambda e: e.get("event") == "request" and e.get("agent") == "bob")
    assert line["decision"] in ("injected", "refused")
    assert not any(secret in str(event) for event in gateway.seen for secret in (*REAL_SECRETS, alice, bob))


def test_revoking_an_agent_cuts_it_off_mid_run(start_gateway: StartGateway, tls_server: StandIn) -> None:
    login_all()
    gateway = start_gateway()
    alice = gateway.agent("alice", "--provider", "openai")
    bob = gateway.agent("bob", "--provider", "openai")
    loop = """
import requests, sys, time
session = requests.Session()  # one kept-alive tunnel: the gateway must check alice again on every request
refused = 0
for _ in range(600):
    try:
        status = str(session.get("https://api.openai.com/v1/models", timeout=10).status_code)
    except requests.RequestException as exc:
        status = type(exc).__name__ + ":" + str(exc).replace(chr(10), " ")[:300]
    print(status, flush=True)
    refused = refused + 1 if status != "200" else 0
    if refused == 3:
        break
    time.sleep(0.05)
"""
    agent = subprocess.Popen(
        py(loop), stdout=subprocess.PIPE, text=True, env=client_env(gateway.agent_env("alice", alice))
    )
    try:
        assert agent.stdout is not None
        statuses = [agent.stdout.readline().strip() for _ in range(3)]
        assert statuses == ["200"] * 3
        assert gateway.cli("agent", "revoke", "alice").code == 0
        after: list[str] = []
        for line in agent.stdout:  # the loop ends after 3 refusals in a row
            after.append(line.strip())
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    first = next(i for i, s in enumerate(after) if s != "200")
    assert first <= 40  # within about a second of the revocation (requests some 50 ms apart)
    assert after[first] == "407"  # inside the tunnel it had open: refused at its next request
    assert len(after) == first + 3  # and never served again: at its new CONNECTs, refused saying why
    assert all("407 authsome: agent alice was revoked" in s for s in after[first + 1 :]), after
    res = subprocess.run(
        ["curl", "-sS", "-v", "-o", "/dev/null", OPENAI_MODELS],
        capture_output=True,
        text=True,
        env=client_env(gateway.agent_env("alice", alice)),
    )
    assert "407 authsome: agent alice was revoked" in res.stderr
    # the other agent carries on
    assert run_client(curl(OPENAI_MODELS), client_env(gateway.agent_env("bob", bob))).out == "200"
    assert auth_of(tls_server.last()) == f"Bearer {OPENAI_KEY}"
    gateway.wait_for(lambda e: e.get("event") == "denied" and e.get("agent") == "alice")


def test_unknown_and_wrong_credentials_get_407_then_429(start_gateway: StartGateway) -> None:
    login_all()
    gateway = start_gateway()
    alice = gateway.agent("alice", "--provider", "openai")
    env = client_env(gateway.agent_env("alice", alice))

    def reason(url: str) -> str:
        res = subprocess.run(
            ["curl", "-sS", "-v", "-o", "/dev/null", "-x", url, OPENAI_MODELS], capture_output=True, text=True, env=env
        )
        return next((line[2:] for line in res.stderr.splitlines() if line.startswith("< HTTP/1.1 4")), res.stderr)

    base = f"127.0.0.1:{gateway.port}"
    assert (
        reason(f"http://{base}")
        == "HTTP/1.1 407 authsome: proxy credentials required: use http://AGENT:TOKEN@HOST:PORT as the proxy URL"
    )
    assert reason(f"http://nobody:{alice}@{base}") == "HTTP/1.1 407 authsome: unknown agent or wrong token"
    assert reason(f"http://alice:{alice}x@{base}") == "HTTP/1.1 407 authsome: unknown agent or wrong token"
    for _ in range(8):
        reason(f"http://alice:guess@{base}")
    locked = reason(f"http://alice:{alice}@{base}")  # even the right token, from a locked-out address
    assert locked.startswith("HTTP/1.1 429 authsome: too many wrong proxy credentials")
    gateway.wait_for(lambda e: e.get("event") == "denied" and e.get("status") == 429)


def test_health_endpoints_say_nothing_else(start_gateway: StartGateway) -> None:
    import requests

    gateway = start_gateway()
    base = f"http://127.0.0.1:{gateway.port}"
    assert (requests.get(f"{base}/healthz", timeout=5).status_code, requests.get(f"{base}/healthz").text) == (
        200,
        "ok\n",
    )
    assert requests.get(f"{base}/readyz", timeout=5).text == "ready\n"
    other = requests.get(f"{base}/", timeout=5)
    assert other.status_code == 404 and "proxy" in other.text


def test_sigterm_lets_a_streaming_request_finish(start_gateway: StartGateway) -> None:
    login_all()
    gateway = start_gateway()
    alice = gateway.agent("alice", "--provider", "openai")
    stream = """
import requests, sys
with requests.get("https://api.openai.com/sse", stream=True, timeout=30) as r:
    for line in r.iter_lines():
        if line:
            print(line.decode(), flush=True)
"""
    client = subprocess.Popen(
        py(stream), stdout=subprocess.PIPE, text=True, env=client_env(gateway.agent_env("alice", alice))
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "data: first"
        gateway.process.send_signal(15)  # SIGTERM while the stand-in holds the second event back for a second
        assert client.stdout.readline().strip() == "data: second"
        assert client.wait(30) == 0
    finally:
        client.kill()
    assert gateway.process.wait(30) == 0
    gateway.wait_for(lambda e: e.get("event") == "stopped")
    assert not (gateway.home / "profiles" / "default" / "gateway" / "state.json").exists()


def test_agents_cannot_reach_the_gateway_hosts_own_services(start_gateway: StartGateway, tls_server: StandIn) -> None:
    login_all()
    gateway = start_gateway()
    env = client_env(gateway.agent_env("alice", gateway.agent("alice", "--provider", "openai")))
    for url in (
        f"https://127.0.0.1:{tls_server.port}/",  # a CONNECT to the host's loopback
        f"http://127.0.0.1:{gateway.port}/healthz",  # a plain request, to the gateway itself
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata endpoint
        "https://localhost:1/",
    ):
        command = ["curl", "-sS", "-v", "-o", "/dev/null", "--noproxy", "", "-x", env["HTTPS_PROXY"], url]
        res = subprocess.run(command, capture_output=True, text=True, env=env)  # as a container's client would
        assert "403 authsome: agents may not reach the gateway host's own loopback" in res.stderr, url
    assert run_client(curl(OPENAI_MODELS), env).out == "200"  # names of the world still work
    refused = [r for r in audit(gateway, "alice", 5) if r["decision"] == "refused"]  # each refusal is in the trail
    assert sorted((r["method"], r["host"], r["port"]) for r in refused) == [
        ("CONNECT", "127.0.0.1", tls_server.port),
        ("CONNECT", "localhost", 1),
        ("GET", "127.0.0.1", gateway.port),
        ("GET", "169.254.169.254", 80),
    ]
    assert all(r["reason"].startswith("destination_forbidden: ") for r in refused)


HOSTILE = """
import base64, json, os, socket, ssl, sys
import requests

proxy, other = os.environ["HTTPS_PROXY"], sys.argv[1]
got = []

def show(response):
    got.append(f"{response.status_code} {response.headers} {response.text}")

# the credential echoed back by the server (the stand-in reflects every header it got)
show(requests.get("https://api.openai.com/echo", timeout=30))
# another agent's credentials inside alice's tunnel, to a provider only that agent may use
show(requests.get("https://api.anthropic.com/v1/models", headers={"Proxy-Authorization": other}, timeout=30))
# every connection of the provider, by name
for name in ("default", "work", "admin"):
    show(requests.get("https://api.openai.com/echo", headers={"X-Authsome-Connection": name}, timeout=30))
# a Host header that points elsewhere, in alice's own tunnel
show(requests.get("https://api.openai.com/echo", headers={"Host": "evil.example"}, timeout=30))
# the proxy port itself, origin-form, with and without credentials; the CA page
host, port = proxy.rsplit("@", 1)[1].split(":")
for path in ("/", "/healthz", "/readyz", "/agents", "/v1/models"):
    show(requests.get(f"http://{host}:{port}{path}", proxies={"http": None, "https": None}, timeout=30))
show(requests.get("http://mitm.it/cert/pem", timeout=30))
print(json.dumps(got))
"""


def test_an_agent_never_obtains_a_credential_whatever_it_sends(start_gateway: StartGateway) -> None:
    login_all()
    gateway = start_gateway()
    alice = gateway.agent("alice", "--provider", "openai")
    bob = gateway.agent("bob", "--provider", "anthropic")
    other = "Basic " + base64.b64encode(f"bob:{bob}".encode()).decode()
    res = run_client([*py(HOSTILE), other], client_env(gateway.agent_env("alice", alice)))
    assert res.code == 0, res.err
    answers = json.loads(res.out.splitlines()[-1])
    assert answers[0].startswith("200") and "authorization" in answers[0]  # the echo came back, masked
    everything = res.out + res.err
    assert not any(secret in everything for secret in REAL_SECRETS), "a credential reached the agent"
    assert bob not in everything
    assert answers[2].startswith("200") and [a.split()[0] for a in answers[3:6]] == ["403", "403", "421"]
    assert "BEGIN CERTIFICATE" in answers[-1] and "PRIVATE KEY" not in everything
