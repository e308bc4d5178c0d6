"""Start-up time of everyday commands: median wall time of `authsome list --json` on a fresh home.

Run: .venv/bin/python benchmarks/startup.py [runs]. Target: 150 ms or less (issue #2, part 8).
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


def measure(args: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([AUTHSOME, *args], env=env, stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    import compileall

    import authsome

    # `pip install .` byte-compiles the package; an editable install under PYTHONDONTWRITEBYTECODE does not.
    compileall.compile_dir(str(Path(authsome.__file__).parent), quiet=1)
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "AUTHSOME_HOME": str(Path(tmp) / "home"), "AUTHSOME_KEY_SOURCE": "file"}
        fresh = measure(["list", "--json"], 1, env)  # the very first run creates the home
        warm = measure(["list", "--json"], runs, env)
        env["OPENAI_API_KEY"] = "sk-bench-0123456789abcdef"
        subprocess.run([AUTHSOME, "login", "openai"], env=env, check=True, capture_output=True)
        get = measure(["get", "openai", "--json"], runs, env)
    print(f"authsome list --json (first run, creates the home): {fresh[0]:.0f} ms")
    print(f"authsome list --json median of {runs}: {statistics.median(warm):.0f} ms (target <= 150 ms)")
    print(f"authsome get openai --json median of {runs}: {statistics.median(get):.0f} ms")


if __name__ == "__main__":
    main()
