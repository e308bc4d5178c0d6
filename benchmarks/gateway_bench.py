"""`authsome run -- true` served by a running gateway against a run that starts its own proxy.

Run: .venv/bin/python benchmarks/gateway_bench.py [rounds]. Target (issue 10): 0.15 s or less with the gateway up.
Interleaved rounds; medians with their range. The gateway runs in the background for a throw-away home.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AUTHSOME = str(Path(sys.executable).with_name("authsome"))


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HOME": tmp, "AUTHSOME_HOME": f"{tmp}/home", "AUTHSOME_KEY_SOURCE": "file"}
        env.pop("AUTHSOME_RUN", None)
        subprocess.run([AUTHSOME, "login", "openai"], input=b"sk-bench-0123456789\n", env=env, check=True)
        subprocess.run([AUTHSOME, "gateway", "start", "--listen", "127.0.0.1:0"], env=env, check=True)
        try:
            cases = {
                "run -- true (gateway up)": [AUTHSOME, "run", "--", "true"],
                "run --no-gateway -- true": [AUTHSOME, "run", "--no-gateway", "--", "true"],
            }
            for argv in cases.values():
                timed(argv, env)  # warm both paths (trust cache, bytecode)
            results: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(rounds):
                for name, argv in cases.items():
                    results[name].append(timed(argv, env))
        finally:
            subprocess.run([AUTHSOME, "gateway", "stop"], env=env, check=False)
    for name, values in results.items():
        print(f"{name:<28} median {statistics.median(values):7.1f} ms  [{min(values):.1f}-{max(values):.1f}]")


if __name__ == "__main__":
    main()
