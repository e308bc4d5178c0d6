"""Speed of `authsome run`'s proxy, against direct connections and a plain mitmproxy set-up, measured in one run.

    python benchmarks/proxy_bench.py [--requests 300] [--rounds 7] [--startups 7] [--download-mb 512]

Everything runs on loopback: a TLS stand-in for api.openai.com / www.example.org (trustme CA) in its own process,
clients in their own processes. Figures printed:

* per-request overhead over a direct connection, keep-alive and new-connection, for
  - authsome's proxy (route matched, header injected), and
  - a baseline: mitmproxy's DumpMaster with its default addons and an injecting addon, intercepting every host
    (how a straightforward mitmproxy-based proxy is built);
* ``run -- true`` wall time: authsome's runner vs the baseline (start, spawn ``true``, stop), median of N;
* throughput of a large download from a host no route matches (tunnelled) vs direct.

Targets (issue 3): ``run -- true`` <= 0.8x and per-request overhead <= 0.7x of the baseline; tunnelled traffic within
20% of direct throughput. Not run by the test suite.
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
from pathlib import Path

import trustme

PY = sys.executable
HOST = "api.openai.com"
OTHER = "www.example.org"

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

# The client: `direct` connects to the stand-in itself; otherwise it goes through HTTPS_PROXY (CONNECT).
CLIENT = r"""
import base64, http.client, json, os, socket, ssl, statistics, sys, time, urllib.parse
mode, host, n, kind, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=os.environ["BENCH_CA"])
def connect():
    if mode == "direct":
        real = socket.create_connection
        def to_loopback(addr, *a, **k):
            return real(("127.0.0.1", port), *a, **k)
        c = http.client.HTTPSConnection(host, 443, context=ctx)
        c._create_connection = to_loopback
        return c
    p = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
    c = http.client.HTTPSConnection(p.hostname, p.port, context=ctx)
    headers = {}
    if p.username:
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(f"{p.username}:{p.password}".encode()).decode()
    c.set_tunnel(host, 443, headers=headers)
    return c
def get(c, path):
    c.request("GET", path, headers={"Authorization": "Bearer placeholder"})
    r = c.getresponse(); total = 0
    while chunk := r.read(1 << 20):
        total += len(chunk)
    assert r.status == 200, r.status
    return total
if kind == "download":
    c = connect(); t = time.perf_counter(); size = get(c, f"/big/{n}"); dt = time.perf_counter() - t
    print(json.dumps({"mb_per_s": size / dt / 1e6})); sys.exit()
times = []
c = connect(); get(c, "/warm")
if kind == "new":
    c.close()
for _ in range(n):
    t = time.perf_counter()
    if kind == "new":
        c = connect(); get(c, "/v1/models"); c.close()
    else:
        get(c, "/v1/models")
    times.append(time.perf_counter() - t)
print(json.dumps({"median_ms": statistics.median(times) * 1000, "mean_ms": statistics.fmean(times) * 1000}))
"""

# authsome's runner, with the stand-in mapped in through the test-only resolve option.
AUTHSOME = r"""
import json, pathlib, sys
from authsome.providers import parse_provider
from authsome.proxy.runner import Route, RunConfig, run_command
openai = parse_provider({"schema_version": 1, "name": "openai", "auth_type": "api_key", "flow": "api_key",
                         "api_key": {"env_var": "OPENAI_API_KEY"}, "host_url": "api.openai.com"})
routes = [Route(openai)] if sys.argv[2] == "route" else []
sys.exit(run_command(RunConfig(command=sys.argv[3:], routes=routes, confdir=pathlib.Path(sys.argv[1]),
                               headers_for=lambda p, c: {"Authorization": "Bearer sk-bench"})))
"""

# The baseline: mitmproxy's DumpMaster (default addons) + an injecting addon; every host is intercepted.
BASELINE = r"""
import asyncio, os, socket, subprocess, sys
from mitmproxy import options
from mitmproxy.tools.dump import DumpMaster
confdir, upstream_ca, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
real = socket.getaddrinfo
def getaddrinfo(host, p, *a, **k):
    if host in ("api.openai.com", "www.example.org"):
        return real("127.0.0.1", port, *a, **k)
    return real(host, p, *a, **k)
socket.getaddrinfo = getaddrinfo
class Inject:
    def requestheaders(self, flow):
        if flow.request.pretty_host == "api.openai.com":
            flow.request.headers["Authorization"] = "Bearer sk-bench"
    def responseheaders(self, flow):
        flow.response.stream = True
class Ready:
    def __init__(self, event): self.event = event
    def running(self): self.event.set()
async def main():
    opts = options.Options(listen_host="127.0.0.1", listen_port=0, confdir=confdir,
                           ssl_verify_upstream_trusted_ca=upstream_ca)
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    ready = asyncio.Event()
    master.addons.add(Inject(), Ready(ready))
    task = asyncio.create_task(master.run())
    await ready.wait()
    proxy = master.addons.get("proxyserver").listen_addrs()[0][1]
    env = dict(os.environ, HTTPS_PROXY=f"http://127.0.0.1:{proxy}")
    child = await asyncio.create_subprocess_exec(*sys.argv[4:], env=env)
    code = await child.wait()
    master.shutdown()
    await task
    return code
sys.exit(asyncio.run(main()))
"""


def run_json(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def wall(cmd: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spread(ratios: list[float]) -> str:
    """Median of the per-round ratios (each round's figures are measured back to back), with their range."""
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--startups", type=int, default=7)
    parser.add_argument("--download-mb", type=int, default=512)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="authsome-bench-"))
    server = None
    try:
        ca = trustme.CA()
        cert = ca.issue_cert(HOST, OTHER)
        cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
        cert.private_key_pem.write_to_path(str(work / "key.pem"))
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        server = subprocess.Popen(
            [PY, "-c", SERVER, str(work / "cert.pem"), str(work / "key.pem")], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        confdir = work / "mitmproxy"
        base_env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        base_env.update(
            SSL_CERT_FILE=str(work / "ca.pem"),
            AUTHSOME_TEST_RESOLVE=f"{HOST}:443=127.0.0.1:{port},{OTHER}:443=127.0.0.1:{port}",
        )
        # one throwaway run creates the CA, so that no measurement pays for key generation
        subprocess.run([PY, "-c", AUTHSOME, str(confdir), "none", "true"], env=base_env, check=True)
        both = work / "both.pem"
        both.write_bytes((work / "ca.pem").read_bytes() + (confdir / "mitmproxy-ca-cert.pem").read_bytes())
        direct_env = {**base_env, "BENCH_CA": str(work / "ca.pem")}
        proxied_env = {**base_env, "BENCH_CA": str(both)}

        def client(host: str, n: int, kind: str) -> list[str]:
            return [PY, "-c", CLIENT, "proxy", host, str(n), kind, str(port)]

        def authsome(route: str, cmd: list[str]) -> list[str]:
            return [PY, "-c", AUTHSOME, str(confdir), route, *cmd]

        def baseline(cmd: list[str]) -> list[str]:
            return [PY, "-c", BASELINE, str(confdir), str(work / "ca.pem"), str(port), *cmd]

        print(f"per-request latency, {args.requests} requests per client, median of {args.rounds} rounds (ms); ratios: "
              "median of the rounds' ratios [lowest-highest]")
        cases = (
            ("keepalive", HOST, "routed host, keep-alive"),
            ("new", HOST, "routed host, new connection"),
            ("new", OTHER, "other host, new connection"),
        )
        for kind, host, label in cases:
            samples: dict[str, list[float]] = {"direct": [], "ours": [], "base": []}
            ratios: list[float] = []
            for _ in range(args.rounds):  # interleaved, so that a noisy moment hits all three alike
                direct_cmd = [PY, "-c", CLIENT, "direct", host, str(args.requests), kind, str(port)]
                d = run_json(direct_cmd, direct_env)["median_ms"]
                o = run_json(authsome("route", client(host, args.requests, kind)), proxied_env)["median_ms"]
                b = run_json(baseline(client(host, args.requests, kind)), proxied_env)["median_ms"]
                for key, value in (("direct", d), ("ours", o), ("base", b)):
                    samples[key].append(value)
                if b > d:
                    ratios.append((o - d) / (b - d))
            d, o, b = (statistics.median(samples[k]) for k in ("direct", "ours", "base"))
            print(
                f"  {label:<28} direct {d:6.2f}   authsome {o:6.2f} (+{o - d:5.2f})   "
                f"baseline {b:6.2f} (+{b - d:5.2f})   overhead ratio {spread(ratios)} (target <= 0.7)"
            )

        print(f"`run -- true` wall time, median of {args.startups}")
        ours_true = wall(authsome("none", ["true"]), base_env, args.startups)
        base_true = wall(baseline(["true"]), base_env, args.startups)
        print(
            f"  authsome runner {ours_true:.3f}s   baseline {base_true:.3f}s   "
            f"ratio {ours_true / base_true:.2f} (target <= 0.8)"
        )
        cli = shutil.which("authsome", path=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if cli:
            home = work / "home"
            cli_env = {**base_env, "AUTHSOME_HOME": str(home), "AUTHSOME_KEY_SOURCE": "file", "HOME": str(work)}
            try:
                cli_true = wall([cli, "run", "--", "true"], cli_env, args.startups)
                print(f"  `authsome run -- true` (CLI, empty store) {cli_true:.3f}s   ratio {cli_true / base_true:.2f}")
            except subprocess.CalledProcessError as exc:
                print(f"  `authsome run -- true` (CLI) failed with exit code {exc.returncode}")

        size = args.download_mb * 1_000_000
        print(f"download of {args.download_mb} MB from {OTHER} (no route: tunnelled), median of {args.rounds}")
        direct_runs, tunnel_runs, ratios = [], [], []
        for _ in range(args.rounds):
            direct_cmd = [PY, "-c", CLIENT, "direct", OTHER, str(size), "download", str(port)]
            direct_runs.append(run_json(direct_cmd, direct_env)["mb_per_s"])
            tunnel_runs.append(run_json(authsome("route", client(OTHER, size, "download")), proxied_env)["mb_per_s"])
            ratios.append(tunnel_runs[-1] / direct_runs[-1])
        print(
            f"  direct {statistics.median(direct_runs):.0f} MB/s   tunnelled {statistics.median(tunnel_runs):.0f} MB/s"
            f"   ratio {spread(ratios)} (target >= 0.8)"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
