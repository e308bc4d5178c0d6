"""Keep-alive throughput and CPU per request of the gateway (1 worker, N workers) against `authsome run`'s own proxy
and a bare mitmdump with an injecting addon, all measured in the same run.

    .venv/bin/python benchmarks/gateway_throughput.py [--rounds 5] [--requests 6000] [--clients 2]
                                                      [--connections 4] [--workers 2]

Every configuration injects the same API key into every request to a TLS stand-in for api.openai.com (trustme CA, an
asyncio server on loopback in its own process; it answers 401 to a request without the key, and every 200 is
counted). The load is ``--clients`` curl processes, each with ``--connections`` keep-alive connections
(``curl -Z --http1.1``), together ``--requests`` requests per measurement; a small driver process starts them once
the proxy is warm (its first connections and certificate made), so that only the steady state is timed.

* ``run --no-gateway``: `authsome run` with its own proxy (a fresh run per round; the driver is its child);
* ``gateway, 1 worker`` / ``gateway, N workers``: `authsome gateway start [--workers N]` (one home each), an agent
  created with ``authsome agent create``, the driver given what ``authsome agent env`` prints;
* ``mitmdump + addon``: the venv's ``mitmdump -q`` with a ten-line addon that sets the Authorization header for the
  host (and maps the host to the stand-in, as AUTHSOME_TEST_RESOLVE does for authsome), trusting the test CA upstream.

CPU is the proxy's own (user + system, from ``/proc/<pid>/stat``: the `run` process; the gateway's supervisor and
its workers; mitmdump) between the start and the end of the load, divided by the requests; the clients' CPU (curl)
is printed too, since they share the machine's cores. Rounds interleave the configurations; figures are medians
with [lowest-highest] over the rounds. Not run by the tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from proxy_bench import write_test_ca

PY = sys.executable
BIN = Path(PY).parent
AUTHSOME = str(BIN / "authsome")
MITMDUMP = str(BIN / "mitmdump")
HOST = "api.openai.com"
KEY = "sk-bench-0123456789abcdefghij"
TICKS = os.sysconf("SC_CLK_TCK")

UPSTREAM = r"""
import asyncio, ssl, sys
cert, key, expect = sys.argv[1], sys.argv[2], ("authorization: bearer " + sys.argv[3]).lower().encode()
BODY = b'{"object":"list","data":[]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
NO = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
class Serve(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        out = []
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end].lower(), self.buffer[end + 4:]
            out.append(OK if expect in head else NO)
        if out:
            self.transport.write(b"".join(out))
async def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = await asyncio.get_running_loop().create_server(Serve, "127.0.0.1", 0, ssl=context, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

# Started behind the proxy under test (as the child of `run`, or with an agent's environment): warms the proxy,
# says "ready", waits for "go" on stdin, then runs the curl processes and prints what they did.
DRIVER = r"""
import json, os, resource, subprocess, sys, time
clients, connections, count, url = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def curl(n):
    argv = ["curl", "-s", "--http1.1", "-Z", "--parallel-max", str(connections), "-w", "\n%{http_code}\n",
            f"{url}/[1-{n}]"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
def codes(proc):
    out, _ = proc.communicate()
    return [line for line in out.splitlines() if line.isdigit()]
warm = [curl(connections * 4) for _ in range(clients)]
warm_codes = [c for p in warm for c in codes(p)]
if set(warm_codes) != {"200"}:
    print(json.dumps({"error": f"warm-up answered {sorted(set(warm_codes))}"}), flush=True)
    sys.exit(1)
before = resource.getrusage(resource.RUSAGE_CHILDREN)
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
procs = [curl(count // clients) for _ in range(clients)]
answered = [c for p in procs for c in codes(p)]
took = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
ok = answered.count("200")
print(json.dumps({"requests": len(answered), "ok": ok, "seconds": took, "client_cpu": cpu}), flush=True)
"""

ADDON = r"""
import os
PORT = int(os.environ["BENCH_UPSTREAM_PORT"])
VALUE = "Bearer " + os.environ["BENCH_KEY"]
class Inject:
    def server_connect(self, data):
        if data.server.address and data.server.address[0] == "api.openai.com":
            data.server.address = ("127.0.0.1", PORT)
    def requestheaders(self, flow):
        if flow.request.pretty_host == "api.openai.com":
            flow.request.headers["authorization"] = VALUE
addons = [Inject()]
"""


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of these processes (their threads included; their children not)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


@dataclass
class Config:
    """One proxy under test: how to start the driver behind it, and which processes are the proxy."""

    name: str
    driver_argv: Callable[[list[str]], list[str]]  # the driver's own argv -> what to run
    env: dict[str, str]
    proxy_pids: Callable[[subprocess.Popen[str]], list[int]]  # given the started driver process
    rps: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # proxy CPU per request, ms
    client_ms: list[float] = field(default_factory=list)


def measure(config: Config, args: argparse.Namespace, url: str) -> None:
    argv = config.driver_argv([PY, "-c", DRIVER, str(args.clients), str(args.connections), str(args.requests), url])
    proc = subprocess.Popen(
        argv, env=config.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        sys.exit(f"{config.name}: the driver did not get ready: {line.strip()} {err.strip()[-500:]}")
    pids = config.proxy_pids(proc)
    before = cpu_seconds(pids)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    result = json.loads(proc.stdout.readline())
    after = cpu_seconds(pids)
    proc.stdin.close()
    proc.wait(60)
    if result["ok"] != result["requests"] or result["requests"] < args.requests * 0.99:
        sys.exit(f"{config.name}: {result['ok']} of {result['requests']} requests answered 200")
    config.rps.append(result["requests"] / result["seconds"])
    config.cpu_ms.append((after - before) / result["requests"] * 1000)
    config.client_ms.append(result["client_cpu"] / result["requests"] * 1000)


def spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=6000, help="requests per measurement (all clients)")
    parser.add_argument("--clients", type=int, default=2, help="curl processes")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections per curl process")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="N of the N-worker gateway")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="authsome-throughput-"))
    started: list[subprocess.Popen[str]] = []
    gateways: list[dict[str, str]] = []
    try:
        write_test_ca(work, HOST)
        upstream = subprocess.Popen(
            [PY, "-c", UPSTREAM, str(work / "cert.pem"), str(work / "key.pem"), KEY], stdout=subprocess.PIPE, text=True
        )
        started.append(upstream)
        assert upstream.stdout is not None
        port = int(upstream.stdout.readline())
        url = f"https://{HOST}/v1/models"

        def home(name: str) -> dict[str, str]:
            """A user's environment with a home of its own, logged in to openai with the bench key."""
            root = work / name
            root.mkdir()
            keep = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
            env = {
                **keep,
                "HOME": str(root),
                "AUTHSOME_HOME": str(root / "authsome"),
                "AUTHSOME_KEY_SOURCE": "file",
                "AUTHSOME_TEST_RESOLVE": f"{HOST}:443=127.0.0.1:{port}",
            }
            login = [AUTHSOME, "login", "openai"]
            subprocess.run(login, env={**env, "OPENAI_API_KEY": KEY}, check=True, capture_output=True)
            return env

        configs: list[Config] = []
        run_env = home("run")
        run_argv = [AUTHSOME, "run", "--no-gateway", "--upstream-ca", str(work / "ca.pem"), "--"]
        configs.append(Config("run --no-gateway", lambda d: [*run_argv, *d], run_env, lambda p: [p.pid]))

        for number, workers in enumerate((1, args.workers), 1):
            env = home(f"gateway-{number}")
            serve = ["gateway", "start", "--listen", "127.0.0.1:0", "--upstream-ca", str(work / "ca.pem"), "--json"]
            serve += ["--workers", str(workers)] if workers > 1 else []
            state = json.loads(subprocess.run([AUTHSOME, *serve], env=env, check=True, capture_output=True).stdout)
            gateways.append(env)
            token = subprocess.run(
                [AUTHSOME, "agent", "create", "bench", "--provider", "openai", "--quiet"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            agent = subprocess.run(
                [AUTHSOME, "agent", "env", "bench", "--token-stdin", "--format", "json"],
                env=env,
                input=token + "\n",
                check=True,
                capture_output=True,
                text=True,
            )
            client_env = {"PATH": os.environ["PATH"], "HOME": env["HOME"], **json.loads(agent.stdout)["env"]}
            pid = int(state["pid"])
            label = f"gateway, {workers} worker{'s' if workers > 1 else ''}"
            configs.append(Config(label, lambda d: d, client_env, functools.partial(_tree_of, pid)))

        mitm_dir = work / "mitmdump"
        mitm_dir.mkdir()
        (mitm_dir / "inject.py").write_text(ADDON)
        mitm_port = free_port()
        mitm_argv = [MITMDUMP, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(mitm_port)]
        mitm_argv += ["--set", f"confdir={mitm_dir}", "--set", f"ssl_verify_upstream_trusted_ca={work / 'ca.pem'}"]
        mitm_argv += ["-s", str(mitm_dir / "inject.py")]
        mitm = subprocess.Popen(
            mitm_argv,
            env={**os.environ, "BENCH_UPSTREAM_PORT": str(port), "BENCH_KEY": KEY},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(mitm)
        deadline = time.monotonic() + 30
        while not (mitm_dir / "mitmproxy-ca-cert.pem").exists() or not _listening(mitm_port):
            if time.monotonic() > deadline or mitm.poll() is not None:
                sys.exit("mitmdump did not start")
            time.sleep(0.1)
        mitm_env = {
            "PATH": os.environ["PATH"],
            "HOME": str(mitm_dir),
            "HTTPS_PROXY": f"http://127.0.0.1:{mitm_port}",
            "CURL_CA_BUNDLE": str(mitm_dir / "mitmproxy-ca-cert.pem"),
        }
        configs.append(Config("mitmdump + addon", lambda d: d, mitm_env, lambda _p: [mitm.pid]))

        print(
            f"{args.clients} curl processes x {args.connections} keep-alive connections, {args.requests} requests per "
            f"measurement, {args.rounds} interleaved rounds, {os.cpu_count()} cores; median [lowest-highest]"
        )
        for _ in range(args.rounds):
            for config in configs:
                measure(config, args, url)
        print(f"  {'':<22} {'req/s':>20} {'proxy CPU ms/req':>24} {'client CPU ms/req':>24}")
        for config in configs:
            print(
                f"  {config.name:<22} {spread(config.rps):>20} {spread(config.cpu_ms, 3):>24} "
                f"{spread(config.client_ms, 3):>24}"
            )
        for env in gateways:
            verify = subprocess.run([AUTHSOME, "log", "--verify"], env=env, capture_output=True, text=True)
            print(f"  audit trail of {Path(env['HOME']).name}: {verify.stdout.strip() or verify.stderr.strip()}")
    finally:
        for env in gateways:
            subprocess.run([AUTHSOME, "gateway", "stop"], env=env, capture_output=True, check=False)
        for proc in started:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _tree_of(pid: int, _driver: subprocess.Popen[str]) -> list[int]:
    return tree(pid)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
