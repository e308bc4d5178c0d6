"""`authsome gateway serve --workers 2`: two worker processes behind one port, their supervisor, real clients.

Which worker served a request (or refused it) is read from the gateway's own lines: each names its worker."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.proxy.conftest import StandIn

from .conftest import (
    AUTHSOME,
    OPENAI_KEY,
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
Event = dict[str, Any]

# `count` requests, each on a new connection, `parallel` at a time; one status code per line.
REQUESTS = """
import sys, requests
from concurrent.futures import ThreadPoolExecutor
url, count, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def get(_):
    with requests.Session() as session:
        return session.get(url, timeout=30).status_code
with ThreadPoolExecutor(parallel) as pool:
    print("\\n".join(str(code) for code in pool.map(get, range(count))))
"""
STREAM = """
import sys, requests
with requests.get(sys.argv[1], stream=True, timeout=30) as r:
    for line in r.iter_lines():
        if line:
            print(line.decode(), flush=True)
    print("status", r.status_code, flush=True)
"""


def curl_burst(count: int, parallel: int = 8, url: str = OPENAI_MODELS) -> list[str]:
    """curl: ``count`` requests, ``parallel`` at a time, each on its own connection; one status code per line."""
    argv = ["curl", "-sS", "-Z", "--parallel-max", str(parallel), "-H", "Connection: close"]
    argv += ["-w", "\\ncode %{http_code}\\n"]
    for _ in range(count):
        argv += ["-o", "/dev/null", url]
    return argv


def codes(out: str) -> list[str]:
    return [line.split()[-1] for line in out.splitlines() if line.startswith("code ")] or out.split()


def events(gateway: Gateway, match: Callable[[Event], bool], count: int, timeout: float = 30.0) -> list[Event]:
    """The gateway's events that ``match``, once there are at least ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in gateway.seen if match(e)]
        left = deadline - time.monotonic()
        if len(found) >= count or left <= 0:
            return found
        try:
            gateway.seen.append(gateway.events.get(timeout=left))
        except queue.Empty:
            continue


def requests_of(agent: str) -> Callable[[Event], bool]:
    return lambda e: e.get("event") == "request" and e.get("agent") == agent


def records(gateway: Gateway, agent: str, count: int) -> list[dict[str, Any]]:
    """The audit trail's request records of ``agent`` once ``count`` are on disk (each worker writes in batches)."""
    deadline = time.monotonic() + 20
    while True:
        res = gateway.cli("log", "--agent", agent, "--json")
        assert res.code == 0, res.err
        found = [r for r in res.json()["records"] if r["event"] == "request"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def started(start_gateway: StartGateway) -> tuple[Gateway, list[int]]:
    login_all()
    gateway = start_gateway("--workers", "2")
    listening = gateway.wait_for(lambda e: e.get("event") == "listening")
    assert len(listening["workers"]) == 2 and listening["pid"] == gateway.process.pid
    return gateway, list(listening["workers"])


def test_two_workers_share_the_port_and_inject_every_request(start_gateway: StartGateway, tls_server: StandIn) -> None:
    gateway, pids = started(start_gateway)
    alice = client_env(gateway.agent_env("alice", gateway.agent("alice", "--provider", "openai")))
    bob = client_env(gateway.agent_env("bob", gateway.agent("bob", "--provider", "openai")))
    tls_server.seen.clear()

    # four client processes at once, each request on a new connection: curl and requests, as two agents
    clients = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv, env in [
            (curl_burst(24), alice),
            (curl_burst(24), bob),
            ([*py(REQUESTS), OPENAI_MODELS, "16", "8"], alice),
            ([*py(REQUESTS), OPENAI_MODELS, "16", "8"], bob),
        ]
    ]
    outputs = [client.communicate(timeout=120) for client in clients]
    for (out, err), client in zip(outputs, clients, strict=True):
        assert client.returncode == 0 and codes(out) == ["200"] * (24 if "code" in out else 16), err
    assert [s.headers.get("authorization") for s in tls_server.seen] == [f"Bearer {OPENAI_KEY}"] * 80

    # both workers took connections from the one port, and each line says which did
    served = events(gateway, requests_of("alice"), 40) + events(gateway, requests_of("bob"), 40)
    assert len(served) == 80 and {e["status"] for e in served} == {200}
    assert {e["worker_pid"] for e in served} == set(pids)
    assert {e["worker"] for e in served} == {1, 2}

    # every request has its record, once, and the chain the two processes appended to is intact
    assert len(records(gateway, "alice", 40)) == 40 and len(records(gateway, "bob", 40)) == 40
    verify = gateway.cli("log", "--verify")
    assert verify.code == 0 and "chain intact" in verify.out, verify.out + verify.err
    assert not any(secret in str(e) for e in gateway.seen for secret in REAL_SECRETS)


def test_a_run_is_served_by_every_worker_and_refused_by_every_worker_once_ended(
    start_gateway: StartGateway, tls_server: StandIn
) -> None:
    gateway, pids = started(start_gateway)
    script = 'echo "proxy $HTTPS_PROXY"; ' + shlex.join(curl_burst(16))
    tls_server.seen.clear()
    run = gateway.cli("run", "--verbose", "--", "sh", "-c", script)
    assert run.code == 0, run.err
    assert codes(run.out.split("\n", 1)[1]) == ["200"] * 16, run.out
    assert [s.headers.get("authorization") for s in tls_server.seen] == [f"Bearer {OPENAI_KEY}"] * 16
    proxy = run.out.split()[1]
    agent = proxy.split("//", 1)[1].split(":", 1)[0]
    assert agent.startswith("run.")  # the gateway served it: its agent, not a proxy of its own

    # the run's agent was known to both workers before its child started: both served it
    served = events(gateway, requests_of(agent), 16)
    assert {e["worker_pid"] for e in served} == set(pids) and {e["status"] for e in served} == {200}
    # as from a proxy of its own: its decision lines (from both workers), its records on disk when it returned
    assert run.err.count("injected    openai/default GET api.openai.com/v1/models") == 16, run.err
    listed = gateway.cli("log", "--agent", agent, "--json").json()["records"]
    assert len(listed) == 16 and len({r["run_id"] for r in listed}) == 1 and None not in {r["run_id"] for r in listed}

    # and once `run` returned, each worker refuses its token: the one that refused it first is stopped (SIGSTOP)
    # while the next connection is made, so the other takes it
    def refused() -> int:
        answer = run_client(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, "http://x.test/"], {})
        assert answer.out == "407"
        denied = events(gateway, lambda e: e.get("event") == "denied", len(refusers) + 1)
        return int(denied[-1]["worker_pid"])

    refusers: list[int] = []
    refusers.append(refused())
    os.kill(refusers[0], signal.SIGSTOP)
    try:
        refusers.append(refused())
    finally:
        os.kill(refusers[0], signal.SIGCONT)
    assert sorted(refusers) == sorted(pids)


def test_an_address_locked_out_by_one_worker_is_locked_out_by_every_worker(
    start_gateway: StartGateway, tls_server: StandIn
) -> None:
    gateway, (first, second) = started(start_gateway)
    alice = gateway.agent("alice", "--provider", "openai")
    connect_status = _connect_as_alice(gateway, alice)
    tls_server.seen.clear()

    # ten wrong tokens, all taken by the first worker (the second is stopped meanwhile): the tenth locks the address
    os.kill(second, signal.SIGSTOP)
    try:
        assert [connect_status("guess") for _ in range(10)] == ["407"] * 10
    finally:
        os.kill(second, signal.SIGCONT)
    refused = events(gateway, lambda e: e.get("event") == "denied", 10)
    assert {e["worker_pid"] for e in refused} == {first}
    # the second worker heard of them: it refuses even alice's right token from that address, until it refills
    os.kill(first, signal.SIGSTOP)
    try:
        assert connect_status(alice) == "429"
    finally:
        os.kill(first, signal.SIGCONT)
    locked = events(gateway, lambda e: e.get("event") == "denied" and e.get("status") == 429, 1)
    assert [e["worker_pid"] for e in locked] == [second]
    assert tls_server.seen == []  # no request went upstream


def _connect_as_alice(gateway: Gateway, right_token: str) -> Callable[[str], str]:
    """``connect_status(token)``: the status of the CONNECT for api.openai.com as alice with ``token`` (curl's own
    connection each time)."""
    env = client_env(gateway.agent_env("alice", right_token))
    base = f"127.0.0.1:{gateway.port}"

    def connect_status(token: str) -> str:
        argv = curl(OPENAI_MODELS, "-s", "-x", f"http://alice:{token}@{base}", "-w", " %{http_connect}")
        return run_client(argv, env).out.split()[-1]

    return connect_status


def test_workers_started_after_a_lockout_refuse_the_address_too(
    start_gateway: StartGateway, tls_server: StandIn
) -> None:
    gateway, old = started(start_gateway)
    alice = gateway.agent("alice", "--provider", "openai")
    connect_status = _connect_as_alice(gateway, alice)
    assert [connect_status("guess") for _ in range(10)] == ["407"] * 10
    assert connect_status(alice) == "429"

    for pid in old:  # both workers die; the supervisor starts two new ones
        os.kill(pid, signal.SIGKILL)
    new = [
        e["worker_pid"]
        for e in events(gateway, lambda e: e.get("action") == "serving" and e["worker_pid"] not in old, 2)
    ]
    assert len(new) == 2
    assert connect_status(alice) == "429"  # they heard of the guesses from the supervisor
    locked = events(gateway, lambda e: e.get("event") == "denied" and e.get("status") == 429, 2)
    assert locked[-1]["worker_pid"] in new
    assert tls_server.seen == []


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_worker_loses_nothing_and_is_replaced(start_gateway: StartGateway, tls_server: StandIn) -> None:
    gateway, (victim, survivor) = started(start_gateway)
    env = client_env(gateway.agent_env("alice", gateway.agent("alice", "--provider", "openai")))
    assert codes(run_client(curl_burst(8), env).out) == ["200"] * 8

    os.kill(victim, signal.SIGKILL)
    ended = gateway.wait_for(lambda e: e.get("event") == "warning" and f"(pid {victim}) ended" in e["message"])
    assert "signal 9" in ended["message"]
    assert _gone(victim)
    # while it is replaced, the other worker takes every connection: none is lost
    assert codes(run_client(curl_burst(16), env).out) == ["200"] * 16

    replaced = gateway.wait_for(
        lambda e: e.get("action") == "serving" and e.get("worker_pid") not in (victim, survivor)
    )
    victim_index = next(e["index"] for e in gateway.seen if e.get("action") == "started" and e["worker_pid"] == victim)
    assert replaced["index"] == victim_index
    status = gateway.cli("gateway", "status", "--json")
    assert status.code == 0 and sorted(status.json()["workers"]) == sorted([survivor, replaced["worker_pid"]])
    assert status.json()["healthy"] is True

    # the new worker serves, with the same store (the same credential) and the same audit chain
    tls_server.seen.clear()
    sent = 8 + 16
    for _ in range(5):
        assert codes(run_client(curl_burst(16), env).out) == ["200"] * 16
        sent += 16
        if any(e["worker_pid"] == replaced["worker_pid"] for e in events(gateway, requests_of("alice"), sent)):
            break
    assert any(e["worker_pid"] == replaced["worker_pid"] for e in events(gateway, requests_of("alice"), sent))
    assert {s.headers.get("authorization") for s in tls_server.seen} == {f"Bearer {OPENAI_KEY}"}
    verify = gateway.cli("log", "--verify")
    assert verify.code == 0, verify.out + verify.err

    # a supervisor killed with SIGKILL leaves no worker behind: each sees its channel end, drains and exits
    os.kill(gateway.process.pid, signal.SIGKILL)
    gateway.process.wait(10)
    deadline = time.monotonic() + 30
    while not (_gone(survivor) and _gone(replaced["worker_pid"])):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.1)
    assert gateway.cli("gateway", "status").code == 1


def test_sigterm_drains_every_worker_then_stops(start_gateway: StartGateway, tls_server: StandIn) -> None:
    gateway, pids = started(start_gateway)
    token = gateway.agent("alice", "--provider", "openai")
    env = client_env(gateway.agent_env("alice", token))
    stream = subprocess.Popen(
        [*py(STREAM), "https://api.openai.com/sse"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert stream.stdout is not None
    assert stream.stdout.readline().strip() == "data: first"  # under way: the second event comes a second later

    gateway.process.send_signal(signal.SIGTERM)
    out, err = stream.communicate(timeout=30)
    assert stream.returncode == 0 and out.split("\n")[:2] == ["data: second", "status 200"], err
    assert gateway.process.wait(30) == 0
    stopped = events(gateway, lambda e: e.get("event") == "stopped", 3, 5)
    assert sorted(e.get("worker_pid", 0) for e in stopped) == sorted([0, *pids])  # both workers, then the supervisor
    assert all(_gone(pid) for pid in pids)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", gateway.port), timeout=5):
        pass
    assert gateway.cli("gateway", "status").code == 1  # nothing left running

    # the same in the background: `gateway start --workers 2` returns once both serve; `stop` drains them
    started_bg = gateway.cli("gateway", "start", "--workers", "2", "--listen", "127.0.0.1:0", "--json")
    assert started_bg.code == 0, started_bg.err
    workers = started_bg.json()["workers"]
    assert len(workers) == 2 and started_bg.json()["pid"] not in workers
    env = client_env(gateway.agent_env("alice", token))  # the new address
    assert codes(run_client(curl_burst(4), env).out) == ["200"] * 4
    stopped_bg = gateway.cli("gateway", "stop", "--json")
    assert stopped_bg.code == 0 and stopped_bg.json()["stopped"] is True and stopped_bg.json()["killed"] is False
    assert all(_gone(pid) for pid in workers)


def test_a_worker_that_cannot_start_stops_the_gateway_with_its_reason(gateway_env: dict[str, str]) -> None:
    env = {**gateway_env, "AUTHSOME_TEST_RESOLVE": "not-an-entry"}  # read by each worker, not by the supervisor
    serve = subprocess.run(
        [AUTHSOME, "gateway", "serve", "--workers", "2", "--listen", "127.0.0.1:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert serve.returncode == 2  # the worker's own exit code: a usage error
    assert re.search(r"Error: gateway worker \d did not start: resolve entry 'not-an-entry' is malformed", serve.stderr)
    assert "Hint: write host:port=address:port" in serve.stderr
    started = re.findall(r"worker \d started \(pid (\d+)\)", serve.stderr)
    assert len(started) == 2 and all(_gone(int(pid)) for pid in started)
