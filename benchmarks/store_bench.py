"""The shared store's costs, PostgreSQL against the local SQLite store, measured in the same run.

Run: .venv/bin/python benchmarks/store_bench.py [lookups]. Starts its own PostgreSQL server (tests/pg.py: Debian's
package, loopback, fsync on as a real server has it). Prints, for each backend:

- a cold credential lookup (what the proxy does for a request when no cache holds the credential: read the record,
  open its sealed secret), in a warm process: p50/p99 over ``lookups`` lookups, interleaved backend by backend;
- a refresh's single-flight lock taken and released (no contention);
- one audit record appended and durable (``AuditLog.append``);
- a fresh process doing one lookup (``Authsome().headers_for``: interpreter, imports, connect, read, decrypt).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pg import start_server

from authsome import Authsome
from authsome.models import Credential
from authsome.secret import Secret

PROVIDERS = 200  # records in each store, so that a lookup is not served by a one-row table


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1e3:7.3f} ms  p99 {p99 * 1e3:7.3f} ms"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    lookups = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    server = start_server(durable=True)
    try:
        url = server.new_database()
        with tempfile.TemporaryDirectory() as tmp:
            env = {"AUTHSOME_KEY_SOURCE": "file"}
            stores = {
                "sqlite": Authsome(Path(tmp) / "home", env=env),
                "postgresql": Authsome(Path(tmp) / "home", env=env, store_url=url),
            }
            for auth in stores.values():
                with auth.store.vault.transaction():
                    for i in range(PROVIDERS):
                        auth.store.save(f"p{i}", "default", Credential(kind="api_key", api_key=Secret(f"sk-{i:040d}")))
            results: dict[str, dict[str, list[float]]] = {name: {} for name in stores}
            for i in range(lookups):  # interleaved: the machine's noise hits both alike
                for name, auth in stores.items():
                    provider = f"p{i % PROVIDERS}"
                    results[name].setdefault("cold lookup (read + decrypt)", []).append(
                        timed(lambda a=auth, p=provider: a.store.load(p, "default"))
                    )
            for i in range(max(50, lookups // 20)):
                for name, auth in stores.items():

                    def lock(a: Authsome = auth, n: int = i) -> None:
                        with a.store.vault.lock(f"connection/p{n % PROVIDERS}/default"):
                            pass

                    results[name].setdefault("refresh lock, uncontended", []).append(timed(lock))
                    results[name].setdefault("audit record, durable", []).append(
                        timed(lambda a=auth: a.audit.append("bench", n=1))
                    )
            script = "from authsome import Authsome; Authsome().store.load('p1', 'default')"
            for _ in range(15):
                for name in stores:
                    child_env = {**os.environ, "AUTHSOME_HOME": str(Path(tmp) / "home"), **env}
                    child_env["AUTHSOME_STORE_URL"] = url if name == "postgresql" else ""
                    results[name].setdefault("fresh process, one lookup", []).append(
                        timed(lambda e=child_env: subprocess.run([sys.executable, "-c", script], env=e, check=True))
                    )
            print(f"store benchmark: {lookups} lookups per backend, {PROVIDERS} records, PostgreSQL on loopback")
            for case in results["sqlite"]:
                for name in stores:
                    print(f"{case:<30} {name:<11} {percentiles(results[name][case])}")
                ratio = statistics.median(results["postgresql"][case]) / statistics.median(results["sqlite"][case])
                print(f"{'':<30} {'pg/sqlite':<11} {ratio:.2f}x (medians)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
