"""What the child's sandbox adds to `authsome run -- true`, and where the time goes.

Run: .venv/bin/python benchmarks/isolation_bench.py [rounds]. Target (issue 14): the sandbox adds 10 ms or less.
Interleaved rounds (isolated, not isolated) so that the machine's noise hits both alike; medians with their range.
The launcher alone is measured the same way against a bare `true`, with the interpreter's own start for reference.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from authsome.isolation import LAUNCHER

AUTHSOME = str(Path(sys.executable).with_name("authsome"))


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def summary(name: str, values: list[float]) -> str:
    return f"{name:<34} median {statistics.median(values):7.1f} ms  [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "AUTHSOME_HOME": str(Path(tmp) / "home"), "AUTHSOME_KEY_SOURCE": "file", "HOME": tmp}
        env.pop("AUTHSOME_RUN", None)
        timed([AUTHSOME, "run", "--", "true"], env)  # the first run creates the home and the CA
        cases = {
            "run -- true (isolated)": [AUTHSOME, "run", "--", "true"],
            "run --no-isolate -- true": [AUTHSOME, "run", "--no-isolate", "--", "true"],
            "launcher -- true": [sys.executable, "-I", "-S", str(LAUNCHER), "--hide", tmp, "--", "true"],
            "true": ["true"],
            "python -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
        }
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, argv in cases.items():
                results[name].append(timed(argv, env))
    for name, values in results.items():
        print(summary(name, values))
    added = [a - b for a, b in zip(results["run -- true (isolated)"], results["run --no-isolate -- true"], strict=True)]
    launcher = [a - b for a, b in zip(results["launcher -- true"], results["true"], strict=True)]
    print(summary("added by isolation to run (paired)", added))
    print(summary("launcher over a bare exec (paired)", launcher))


if __name__ == "__main__":
    main()
