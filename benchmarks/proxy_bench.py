"""Speed of `authsome run` as a user's program meets it, against authsome 0.2.3 measured in the same run.

    python benchmarks/proxy_bench.py [--rounds 5] [--requests 40] [--connections 100] [--burst 3] [--threads 4]
                                     [--download-mb 256] [--only latency|keepalive|start|download]...
                                     [--run-option=--no-isolate]...

Both tools are the real thing: this tree's `authsome run` (a home with an OpenAI key, so every request is written to
the audit trail, as a user has it) and the authsome 0.2.3 package from PyPI in its own Python 3.13 venv
(tests/compat/reference.py), whose `authsome run` starts its own proxy. A TLS stand-in for api.openai.com (trustme
CA) runs on loopback in its own process; each measurement is a fresh `run` whose child is the client. 0.2.3's proxy
reaches the stand-in through a wrapper that maps the name to loopback and adds the test CA to certifi's bundle (what
authsome's own AUTHSOME_TEST_RESOLVE and --upstream-ca do). The cases are interleaved in every round, so that a noisy
moment hits all alike; each ratio is computed per round and printed as the median [lowest-highest] over the rounds.

* ``requests.get()``: a new session, hence a new SSL context and connection, per call (median latency);
* a new connection per request with one reused SSL context (``ssl.create_default_context()``, as httpx, urllib and
  aiohttp make it);
  for both: the overhead over a direct connection, authsome's divided by 0.2.3's;
* keep-alive throughput (``--threads`` connections, ``--burst`` seconds), and how long `run` takes to exit after
  its child has finished such a burst;
* ``run -- true`` wall time;
* a large download from a host no route matches (tunnelled), against direct.

Targets (issue 13): ``run -- true`` <= 0.3x 0.2.3; overhead of ``requests.get()`` <= 0.5x, of a new connection with
a reused context <= 0.6x; keep-alive throughput >= 2x; `run` exits within 0.1 s of its child. Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import certifi
import trustme

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
AUTHSOME = str(Path(PY).with_name("authsome"))
HOST = "api.openai.com"
OTHER = "www.example.org"
KEY = "sk-bench-0123456789abcdefghij"

SERVER = r"""
import ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
cert, key = sys.argv[1], sys.argv[2]
CHUNK = b"x" * 65536
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/big/"):
            size = int(self.path.split("/")[2])
            self.send_response(200); self.send_header("Content-Length", str(size)); self.end_headers()
            while size > 0:
                n = min(size, len(CHUNK)); self.wfile.write(CHUNK[:n]); size -= n
            return
        body = b'{"object":"list","data":[]}'
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    def finish_request(self, request, addr):
        try:
            request = ctx.wrap_socket(request, server_side=True)
        except OSError:
            return
        super().finish_request(request, addr)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""

# The user's program. Direct (no HTTPS_PROXY): the stand-in answers for the names on loopback; trust comes from the
# environment in every case (REQUESTS_CA_BUNDLE for requests; SSL_CERT_FILE/SSL_CERT_DIR for the default context).
CLIENT = r"""
import base64, http.client, json, os, socket, ssl, statistics, sys, threading, time, urllib.parse
mode, port, host = sys.argv[1], int(sys.argv[2]), sys.argv[3]
proxy = os.environ.get("HTTPS_PROXY")
if proxy is None:
    real = socket.getaddrinfo
    def getaddrinfo(name, p, *a, **k):
        here = name in ("api.openai.com", "www.example.org")
        return real("127.0.0.1", port, *a, **k) if here else real(name, p, *a, **k)
    socket.getaddrinfo = getaddrinfo
HEADERS = {"Authorization": "Bearer placeholder"}
def connect(context):
    if proxy is None:
        return http.client.HTTPSConnection(host, 443, context=context, timeout=30)
    p = urllib.parse.urlsplit(proxy)
    c = http.client.HTTPSConnection(p.hostname, p.port, context=context, timeout=30)
    auth = {"Proxy-Authorization": "Basic " + base64.b64encode(f"{p.username}:{p.password}".encode()).decode()}
    c.set_tunnel(host, 443, headers=auth if p.username else {})
    return c
def get(c, path="/v1/models"):
    c.request("GET", path, headers=HEADERS)
    r = c.getresponse(); total = 0
    while chunk := r.read(1 << 20):
        total += len(chunk)
    assert r.status == 200, r.status
    return total
def timed(n, once):
    once()  # warm: imports, the proxy's upstream connection and certificate
    times = []
    for _ in range(n):
        t = time.perf_counter(); once(); times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000
if mode == "requests":
    import requests
    def once():
        r = requests.get(f"https://{host}/v1/models", headers=HEADERS, timeout=30)
        assert r.status_code == 200, r.status_code
    print(json.dumps({"ms": timed(int(sys.argv[4]), once)}))
elif mode == "newconn":
    context = ssl.create_default_context()
    def once():
        c = connect(context); get(c); c.close()
    print(json.dumps({"ms": timed(int(sys.argv[4]), once)}))
elif mode == "keepalive":
    seconds, threads = float(sys.argv[4]), int(sys.argv[5])
    context = ssl.create_default_context()
    conns = [connect(context) for _ in range(threads)]
    for c in conns:
        get(c)
    counts = [0] * threads
    deadline = time.monotonic() + seconds
    def work(i):
        while time.monotonic() < deadline:
            get(conns[i]); counts[i] += 1
    start = time.monotonic()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers: w.start()
    for w in workers: w.join()
    rps = sum(counts) / (time.monotonic() - start)
    print(json.dumps({"rps": rps, "end": time.time()}), flush=True)
    os._exit(0)  # `end` is when this process is done: the rest is the run's own exit
elif mode == "download":
    c = connect(ssl.create_default_context()); t = time.perf_counter(); size = get(c, f"/big/{sys.argv[4]}")
    print(json.dumps({"mb_per_s": size / (time.perf_counter() - t) / 1e6}))
"""

# authsome 0.2.3's CLI, with its proxy's upstream name mapped to the stand-in and the test CA added to certifi.
REFERENCE = r"""
import os, socket, sys
import certifi
port, bundle = int(os.environ.pop("BENCH_PORT")), os.environ.pop("BENCH_CERTIFI")
real = socket.getaddrinfo
def getaddrinfo(name, p, *a, **k):
    return real("127.0.0.1", port, *a, **k) if name in ("api.openai.com", "www.example.org") else real(name, p, *a, **k)
socket.getaddrinfo = getaddrinfo
certifi.where = lambda: bundle
from authsome.cli import cli
sys.argv[0] = "authsome"
cli()
"""
REFERENCE_LOGIN = r"""
import sys
from authsome.auth.input_provider import MockInputProvider
from authsome.context import AuthsomeContext
auth = AuthsomeContext.create().auth
keys = MockInputProvider({"api_key": sys.argv[1]})
auth.login_with_result(provider="openai", connection_name="default", input_provider=keys)
"""


def write_test_ca(work: Path, *hosts: str) -> trustme.CA:
    """A test CA and a leaf for ``hosts`` as ``work``/ca.pem, cert.pem and key.pem (the stand-ins' TLS)."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*hosts)
    leaf.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(work / "key.pem"))
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    return ca


def spread(values: list[float]) -> str:
    """Median of the per-round values, with their range."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def run_json(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def burst(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(requests per second, seconds from the child's end to the run's exit)."""
    proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    exited = time.time()
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["rps"], exited - result["end"]


def reference_python() -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.compat.reference import reference_python as find

    try:
        return find("0.2.3")
    except BaseException as exc:  # pytest's Skipped when no Python 3.13 exists
        sys.exit(f"authsome 0.2.3 is needed for the comparison: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40, help="requests.get() calls per measurement")
    parser.add_argument("--connections", type=int, default=100, help="new connections per measurement")
    parser.add_argument("--burst", type=float, default=3.0, help="seconds of keep-alive traffic")
    parser.add_argument("--threads", type=int, default=4, help="keep-alive connections in parallel")
    parser.add_argument("--download-mb", type=int, default=256)
    parts = ("latency", "keepalive", "start", "download")
    parser.add_argument("--only", choices=parts, action="append", help="measure only this part (repeatable)")
    parser.add_argument("--run-option", action="append", default=[], help="pass to `authsome run`, e.g. --no-isolate")
    args = parser.parse_args()
    only = set(args.only or parts)

    ref_python = reference_python()
    work = Path(tempfile.mkdtemp(prefix="authsome-bench-"))
    server = None
    try:
        ca = write_test_ca(work, HOST, OTHER)
        with_ca = work / "certifi-and-test-ca.pem"  # what a direct client trusts: certifi's roots + the test CA
        with_ca.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca.cert_pem.bytes())
        server = subprocess.Popen(
            [PY, "-c", SERVER, str(work / "cert.pem"), str(work / "key.pem")], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())

        def user_env(home: Path, **extra: str) -> dict[str, str]:
            """A plain user's environment: no proxy, no CA variables of this machine."""
            keep = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
            return {**keep, "HOME": str(home), **extra}

        ours_env = user_env(
            work / "ours",
            AUTHSOME_HOME=str(work / "ours" / "authsome"),
            AUTHSOME_KEY_SOURCE="file",
            AUTHSOME_TEST_RESOLVE=f"{HOST}:443=127.0.0.1:{port},{OTHER}:443=127.0.0.1:{port}",
        )
        ref_env = user_env(work / "ref", AUTHSOME_HOME=str(work / "ref" / "authsome"))
        direct_env = user_env(work / "direct", REQUESTS_CA_BUNDLE=str(with_ca), SSL_CERT_FILE=str(with_ca))
        for path in (work / "ours", work / "ref", work / "direct"):
            path.mkdir()
        subprocess.run(
            [AUTHSOME, "login", "openai"], env={**ours_env, "OPENAI_API_KEY": KEY}, check=True, capture_output=True
        )
        subprocess.run([str(ref_python), "-c", REFERENCE_LOGIN, KEY], env=ref_env, check=True, capture_output=True)
        ref_run_env = {**ref_env, "BENCH_PORT": str(port), "BENCH_CERTIFI": str(with_ca)}

        def ours(*child: str) -> list[str]:
            return [AUTHSOME, "run", *args.run_option, "--upstream-ca", str(work / "ca.pem"), "--", *child]

        def ref(*child: str) -> list[str]:
            return [str(ref_python), "-c", REFERENCE, "run", "--", *child]

        def client(mode: str, *rest: object, host: str = HOST) -> list[str]:
            return [PY, "-c", CLIENT, mode, str(port), host, *map(str, rest)]

        # the first runs make each tool's CA (and authsome's cached trust), so that no measurement pays for them
        subprocess.run(ours("true"), env=ours_env, check=True, capture_output=True)
        subprocess.run(ref("true"), env=ref_run_env, check=True, capture_output=True)

        print(f"authsome (this tree, audit trail on) against authsome 0.2.3, {args.rounds} interleaved rounds")
        print("ratios: median of the rounds' ratios [lowest-highest]")
        latency_cases: list[tuple[str, Callable[[], list[str]], float]] = [
            ("requests.get(), new SSL context per call", lambda: client("requests", args.requests), 0.5),
            ("new connection, reused SSL context", lambda: client("newconn", args.connections), 0.6),
        ]
        for label, make, target in latency_cases if "latency" in only else []:
            samples: dict[str, list[float]] = {"direct": [], "ours": [], "ref": []}
            ratios = []
            for _ in range(args.rounds):
                d = run_json(make(), direct_env)["ms"]
                o = run_json(ours(*make()), ours_env)["ms"]
                r = run_json(ref(*make()), ref_run_env)["ms"]
                for key, value in (("direct", d), ("ours", o), ("ref", r)):
                    samples[key].append(value)
                if r > d:
                    ratios.append((o - d) / (r - d))
            d, o, r = (statistics.median(samples[k]) for k in ("direct", "ours", "ref"))
            print(
                f"  {label:<42} direct {d:6.2f} ms   authsome {o:6.2f} (+{o - d:5.2f})   "
                f"0.2.3 {r:6.2f} (+{r - d:5.2f})   overhead ratio {spread(ratios)} (target <= {target})"
            )

        rps: dict[str, list[float]] = {"ours": [], "ref": []}
        exits: dict[str, list[float]] = {"ours": [], "ref": []}
        ratios = []
        for _ in range(args.rounds if "keepalive" in only else 0):
            for key, wrap, env in (("ours", ours, ours_env), ("ref", ref, ref_run_env)):
                value, exit_after = burst(wrap(*client("keepalive", args.burst, args.threads)), env)
                rps[key].append(value)
                exits[key].append(exit_after)
            ratios.append(rps["ours"][-1] / rps["ref"][-1])
        if rps["ours"]:
            print(
                f"  keep-alive throughput, {args.threads} connections, {args.burst:g} s bursts: "
                f"authsome {statistics.median(rps['ours']):.0f} req/s   "
                f"0.2.3 {statistics.median(rps['ref']):.0f} req/s   "
                f"ratio {spread(ratios)} (target >= 2)"
            )
            print(
                f"  `run` exits after its child's burst in: authsome {spread(exits['ours'])} s (target <= 0.1)   "
                f"0.2.3 {spread(exits['ref'])} s"
            )

        walls: dict[str, list[float]] = {"ours": [], "ref": []}
        ratios = []
        for _ in range(args.rounds if "start" in only else 0):
            walls["ours"].append(wall(ours("true"), ours_env))
            walls["ref"].append(wall(ref("true"), ref_run_env))
            ratios.append(walls["ours"][-1] / walls["ref"][-1])
        if walls["ours"]:
            print(
                f"  `run -- true`: authsome {statistics.median(walls['ours']):.3f} s   "
                f"0.2.3 {statistics.median(walls['ref']):.3f} s   ratio {spread(ratios)} (target <= 0.3)"
            )

        size = args.download_mb * 1_000_000
        tunnel_env = {**ours_env, "SSL_CERT_FILE": str(work / "ca.pem")}  # the child verifies the host itself
        direct_runs, tunnel_runs, ratios = [], [], []
        for _ in range(args.rounds if "download" in only else 0):
            direct_runs.append(run_json(client("download", size, host=OTHER), direct_env)["mb_per_s"])
            tunnel_runs.append(run_json(ours(*client("download", size, host=OTHER)), tunnel_env)["mb_per_s"])
            ratios.append(tunnel_runs[-1] / direct_runs[-1])
        if direct_runs:
            print(
                f"  {args.download_mb} MB from an unrouted (tunnelled) host: "
                f"direct {statistics.median(direct_runs):.0f} "
                f"MB/s   authsome {statistics.median(tunnel_runs):.0f} MB/s   ratio {spread(ratios)} (target >= 0.8)"
            )
        verify = subprocess.run([AUTHSOME, "log", "--verify"], env=ours_env, capture_output=True, text=True)
        print(f"  audit trail after the run: {verify.stdout.strip() or verify.stderr.strip()}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
