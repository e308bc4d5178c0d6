"""`authsome run` served by a running gateway against a run that starts its own proxy.

Run: .venv/bin/python benchmarks/gateway_bench.py [rounds]. Targets (issue 10): `run -- true` 0.15 s or less with the
gateway up, and a first request on a new connection cheaper than with a per-run proxy (warm CA, warm upstream
sessions). Interleaved rounds; medians with their range. The gateway runs in the background for a throw-away home;
the upstream is a TLS stand-in for api.openai.com on loopback (trustme CA, the same server as proxy_bench.py).

* ``run -- true``: the whole command, wall time.
* first request: the child's first ``requests.get()`` to the stand-in through the proxy (a new connection: CONNECT,
  TLS with the proxy's certificate for the host, upstream TLS, the injected request), timed inside the child.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxy_bench import SERVER, write_test_ca

AUTHSOME = str(Path(sys.executable).with_name("authsome"))
HOST = "api.openai.com"
FIRST_REQUEST = """
import json, time
t = time.perf_counter()
import requests
imported = time.perf_counter()
r = requests.get("https://api.openai.com/v1/models", timeout=30)
assert r.status_code == 200, r.status_code
print(json.dumps({"ms": (time.perf_counter() - imported) * 1000}))
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def first_request(argv: list[str], env: dict[str, str]) -> float:
    out = subprocess.run([*argv, sys.executable, "-c", FIRST_REQUEST], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"first request failed: {out.stderr.strip()[-400:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f} ms  [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_test_ca(work, HOST)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(work / "cert.pem"), str(work / "key.pem")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        env = {**os.environ, "HOME": tmp, "AUTHSOME_HOME": f"{tmp}/home", "AUTHSOME_KEY_SOURCE": "file"}
        env["AUTHSOME_TEST_RESOLVE"] = f"{HOST}:443=127.0.0.1:{port}"
        for name in ("AUTHSOME_RUN", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            env.pop(name, None)
        subprocess.run([AUTHSOME, "login", "openai"], input=b"sk-bench-0123456789\n", env=env, check=True)
        upstream_ca = ["--upstream-ca", str(work / "ca.pem")]
        subprocess.run([AUTHSOME, "gateway", "start", "--listen", "127.0.0.1:0", *upstream_ca], env=env, check=True)
        try:
            runs = {
                "gateway up": [AUTHSOME, "run", "--"],
                "own proxy": [AUTHSOME, "run", "--no-gateway", *upstream_ca, "--"],
            }
            for argv in runs.values():
                timed([*argv, "true"], env)  # warm both paths (trust cache, bytecode, the CA)
                first_request(argv, env)
            walls: dict[str, list[float]] = {name: [] for name in runs}
            firsts: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(rounds):
                for name, argv in runs.items():
                    walls[name].append(timed([*argv, "true"], env))
                    firsts[name].append(first_request(argv, env))
        finally:
            subprocess.run([AUTHSOME, "gateway", "stop"], env=env, check=False)
            server.terminate()
            server.wait()
    for label, values in (("run -- true", walls), ("first request", firsts)):
        for name in runs:
            print(f"{f'{label} ({name})':<30} {spread(values[name])}")


if __name__ == "__main__":
    main()
