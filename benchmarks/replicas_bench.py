"""Gateway replicas on one PostgreSQL store: requests per second and latency for one replica and for two, what
committing each request's audit record before its answer costs, and how soon a change made on one replica is seen
by the other.

Run: .venv/bin/python benchmarks/replicas_bench.py [requests] [clients]. Starts its own PostgreSQL server (tests/pg.py,
fsync on as a real server has it), a TLS API stand-in, and ``authsome gateway serve`` processes; clients are
separate processes (httpx, one keep-alive connection each, requests one after another), split evenly across the
replicas of a case. Every request is injected with an API key and audited. Cases, measured in interleaved rounds:

- ``sqlite, 1 replica``: the local store (the default; its request records are queued and written every 50 ms);
- ``postgresql, 1 replica, queued``: the shared store with the local store's queue (patched in for the comparison);
- ``postgresql, 1 replica``: the shared store, each record committed before its request is answered;
- ``postgresql, 1 replica, no flush``: the same, its database role set to ``synchronous_commit = off``;
- ``postgresql, 2 replicas``: each record committed before its answer, two gateways.

Then, on the two replicas, the time from a command's exit on one replica to the first request through the other that
shows its effect: a custom provider registered and logged in, a connection logged in again, an agent revoked.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import trustme
from tests.e2e.gateway.conftest import Gateway
from tests.e2e.store.fleet import ACME, AgentClient, Fleet, Upstream, agent, bundle_of, upstream
from tests.pg import ADMIN_USER, PgServer, start_server

KEY = "sk-bench-0123456789abcdefghij"
OPENAI_MODELS = "https://api.openai.com/v1/models"
QUEUED = [
    sys.executable,
    "-c",
    "import sys; from authsome.store.pg.audit import PgAuditLog; PgAuditLog.commits_before_answer = False; "
    "from authsome.cli.main import main; sys.argv[0] = 'authsome'; sys.exit(main())",
]
CLIENT = """
import json, ssl, sys, time, httpx
proxy, bundle, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
times = []
with httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=bundle), timeout=30) as http:
    http.get(prefix + "warm").raise_for_status()
    start = time.perf_counter()
    for n in range(count):
        began = time.perf_counter()
        http.get(f"{prefix}{n}").raise_for_status()
        times.append(time.perf_counter() - began)
    took = time.perf_counter() - start
print(json.dumps({"times": times, "took": took}))
"""


@dataclass
class Case:
    name: str
    bots: list[AgentClient]  # one per client process, spread over the case's replicas


def load(case: Case, requests: int) -> tuple[float, list[float]]:
    """Every client process at once, ``requests`` in all: (requests per second, latencies)."""
    each = max(1, requests // len(case.bots))
    procs = []
    for bot in case.bots:
        proxy = f"http://{bot.name}:{bot.token}@127.0.0.1:{bot.gateway.port}"
        prefix = f"https://api.openai.com/v1/{bot.name}/"
        argv = [sys.executable, "-c", CLIENT, proxy, str(bot.bundle), prefix, str(each)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    times = [t for r in results for t in r["times"]]
    return len(times) / max(r["took"] for r in results), times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def until(check: Callable[[], bool], limit: float = 20.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            raise RuntimeError("the change was not seen")
    return time.monotonic() - start


def status(bot: AgentClient, url: str) -> int | None:
    try:
        with bot.client(timeout=10) as http:
            return http.get(url).status_code
    except httpx.ProxyError:
        return None


def propagation(fleet: Fleet, api: Upstream, one: Gateway, two: Gateway, rounds: int) -> dict[str, list[float]]:
    """Seconds from a command's exit on replica 0 to its effect through replica 1 (each try a new connection)."""
    names = ("custom provider registered + logged in", "connection logged in again", "agent revoked")
    figures: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name, seconds in zip(names, changes(fleet, api, one, two, i), strict=True):
            figures[name].append(seconds)
    return figures


def changes(fleet: Fleet, api: Upstream, one: Gateway, two: Gateway, i: int) -> tuple[float, float, float]:
    made = agent(fleet, 0, one, f"wild{i}")  # every connected provider
    wild = on(made, two)
    name, acme_key, key = f"acme{i}", f"acme-{i}-0123456789abcdef", f"sk-round{i}-0123456789abcdef"
    path = fleet.root / f"{name}.json"
    path.write_text(json.dumps({**ACME, "name": name, "host_url": f"https://api.acme.test/{name}"}))
    registered = fleet.cli(0, "register", str(path))
    assert registered.code == 0, registered.err
    assert fleet.cli(0, "login", name, ACME_API_KEY=acme_key).code == 0
    url = f"https://api.acme.test/{name}/x"
    provider = until(lambda: status(wild, url) == 200 and acme_key in (api.last_authorization() or ""))
    assert fleet.cli(0, "login", "openai", "--force", OPENAI_API_KEY=key).code == 0
    connection = until(lambda: status(wild, OPENAI_MODELS) == 200 and api.last_authorization() == f"Bearer {key}")
    assert fleet.cli(0, "agent", "revoke", wild.name).code == 0
    revoked = until(lambda: status(wild, OPENAI_MODELS) is None)
    return provider, connection, revoked


def on(bot: AgentClient, gateway: Gateway) -> AgentClient:
    return AgentClient(bot.name, bot.token, gateway, bot.bundle)


@contextmanager
def serving(
    fleet: Fleet, index: int, *, command: list[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    gateway = fleet.start(index, command=command, **(env or {}))
    try:
        yield gateway
    finally:
        gateway.stop()


def measure(cases: list[Case], requests: int, rounds: int) -> None:
    results: dict[str, tuple[list[float], list[float]]] = {c.name: ([], []) for c in cases}
    for _ in range(rounds):
        for case in cases:
            rate, times = load(case, requests // rounds)
            results[case.name][0].append(rate)
            results[case.name][1].extend(times)
    print(f"{requests} requests per case ({rounds} interleaved rounds), {len(cases[0].bots)} client processes")
    for name, (rps, times) in results.items():
        print(
            f"  {name:<32} {statistics.median(rps):6.0f} req/s [{min(rps):.0f}-{max(rps):.0f}]"
            f"  p50 {percentile(times, 0.5):6.2f} ms  p99 {percentile(times, 0.99):6.2f} ms"
        )


def relaxed_role(server: PgServer, url: str) -> str:
    """``url`` as a role whose commits do not wait for the WAL flush (``synchronous_commit = off``, set by the
    operator on the role: a commit survives the client's death, not the database server's crash)."""
    server.admin(f"CREATE ROLE authsome_relaxed LOGIN SUPERUSER PASSWORD '{server.password}'")
    server.admin("ALTER ROLE authsome_relaxed SET synchronous_commit = off")
    return url.replace(f"{ADMIN_USER}:", "authsome_relaxed:", 1)


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1800
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    server = start_server(durable=True)
    root = Path(tempfile.mkdtemp(prefix="authsome-bench-"))
    try:
        with ExitStack() as stack:
            ca = trustme.CA()
            ca_file = root / "ca.pem"
            ca.cert_pem.write_to_path(str(ca_file))
            api = stack.enter_context(upstream(ca))
            fleet = Fleet(root, server.new_database(), api.port, ca_file)
            stack.callback(fleet.close)
            benchmark(fleet, api, server, stack, requests, clients)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def benchmark(fleet: Fleet, api: Upstream, server: PgServer, stack: ExitStack, requests: int, clients: int) -> None:
    local = {"AUTHSOME_STORE_URL": ""}  # replica 3: this machine's SQLite store
    relaxed = {"AUTHSOME_STORE_URL": relaxed_role(server, fleet.url)}  # replica 4: commits without a WAL flush
    assert fleet.cli(0, "login", "openai", OPENAI_API_KEY=KEY).code == 0
    for index in (1, 2, 4):
        fleet.home(index)  # the fleet's master key, copied
    assert fleet.cli(3, "login", "openai", OPENAI_API_KEY=KEY, **local).code == 0
    one = stack.enter_context(serving(fleet, 0))
    two = stack.enter_context(serving(fleet, 1))
    queued = stack.enter_context(serving(fleet, 2, command=QUEUED))
    sqlite = stack.enter_context(serving(fleet, 3, env=local))
    unflushed = stack.enter_context(serving(fleet, 4, env=relaxed))
    bots = [agent(fleet, 0, one, f"bot{i}", "--provider", "openai") for i in range(clients)]
    local_bots = []
    for i in range(clients):
        made = fleet.cli(3, "agent", "create", f"bot{i}", "--provider", "openai", "--quiet", **local)
        local_bots.append(AgentClient(f"bot{i}", made.out.strip(), sqlite, bundle_of(sqlite)))
    measure(
        [
            Case("sqlite, 1 replica", local_bots),
            Case("postgresql, 1 replica, queued", [on(b, queued) for b in bots]),
            Case("postgresql, 1 replica", [on(b, one) for b in bots]),
            Case("postgresql, 1 replica, no flush", [on(b, unflushed) for b in bots]),
            Case("postgresql, 2 replicas", [on(b, (one, two)[i % 2]) for i, b in enumerate(bots)]),
        ],
        requests,
        rounds=3,
    )
    figures = propagation(fleet, api, one, two, rounds=5)
    verified = fleet.cli(0, "log", "--verify", "--json").json()
    print(f"the shared trail: {verified['records']} records, verified: {verified['ok']}")
    print("a change on one replica, seen through the other (from the command's exit to the first request):")
    for name, values in figures.items():
        print(f"  {name:<40} median {statistics.median(values) * 1000:5.0f} ms  max {max(values) * 1000:5.0f} ms")


if __name__ == "__main__":
    main()
