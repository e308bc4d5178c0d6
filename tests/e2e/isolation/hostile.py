"""What a child of `authsome run` that has been talked into leaking tries, run as the child itself.

Every attempt appends whatever it could read to ``loot`` (a file in the working directory); the test then searches it
for the real secret, the master key and the CA's private key. ``report.json`` says what each attempt got.
Usage: python hostile.py FILE [--narrow] (FILE holds the pid of `authsome run`, as seen from outside the sandbox)
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

PROXY_PID = int(Path(sys.argv[1]).read_text())
WIDE = sys.argv[2:] != ["--narrow"]  # narrow: no file search, only the run's own processes (for unsandboxed runs)
loot = open("loot", "ab")  # noqa: SIM115
report: dict[str, str] = {}


def grab(name: str, data: bytes | str) -> None:
    loot.write(data.encode() if isinstance(data, str) else data)
    loot.write(b"\n")
    report[name] = f"read {len(data)} bytes"


def attempt(name: str, fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception as exc:  # every failure is the expected outcome: record it
        report[name] = f"failed: {type(exc).__name__}: {exc}"[:300]


def read_tree(root: str, limit: int = 3000) -> None:
    count = 0
    for base, dirs, files in os.walk(root, onerror=lambda e: report.setdefault(f"walk {root}", str(e))):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "node_modules", ".venv", "lib", "site-packages")]
        for f in files:
            count += 1
            if count > limit:
                return
            path = os.path.join(base, f)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):  # a FIFO would block the search
                    continue
                with open(path, "rb") as fh:
                    grab(f"file {path}", fh.read(1 << 18))
            except OSError:
                pass


home = os.environ.get("AUTHSOME_HOME", "")
attempt("master key", lambda: grab("master key", Path(home, "master.key").read_bytes()))
attempt("store db", lambda: grab("store db", Path(home, "profiles", "default", "store.db").read_bytes()))
attempt("ca key", lambda: grab("ca key", Path.home().joinpath(".mitmproxy", "mitmproxy-ca.pem").read_bytes()))
for root in (
    {home, str(Path.home()), os.getcwd(), "/tmp", "/var/tmp", "/dev/shm", os.path.dirname(home)} if WIDE else ()
):
    attempt(f"tree {root}", lambda root=root: read_tree(root))


def cli(*args: str, env: dict[str, str] | None = None) -> None:
    out = subprocess.run(["authsome", *args], capture_output=True, env=env)
    grab(f"cli {' '.join(args)} (exit {out.returncode})", out.stdout + out.stderr)
    report[f"cli {' '.join(args)}{' (no marker)' if env else ''}"] = f"exit {out.returncode}"


no_marker = {k: v for k, v in os.environ.items() if k != "AUTHSOME_RUN"}
for env in (None, no_marker):
    cli("export", "openai", "--format", "env", env=env)
    cli("get", "openai", "--field", "api_key", "--show-secret", env=env)
    code = "from authsome import Authsome; print(Authsome().headers_for('openai'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
    grab("library", out.stdout + out.stderr)
    report[f"library{' (no marker)' if env else ''}"] = f"exit {out.returncode}"

every = [int(p) for p in os.listdir("/proc") if p.isdigit()] if WIDE else []
for pid in {PROXY_PID, os.getppid(), 1, *every}:
    if pid == os.getpid():
        continue
    for what in ("environ", "cmdline", "mem", "root/" + home.lstrip("/") + "/master.key"):

        def read(pid: int = pid, what: str = what) -> None:
            path = f"/proc/{pid}/{what}"
            if what == "mem":
                with open(path, "rb") as fh:  # the first readable mapping is enough to prove access
                    maps = open(f"/proc/{pid}/maps").read().splitlines()  # noqa: SIM115
                    start = int(maps[0].split("-")[0], 16)
                    fh.seek(start)
                    grab(path, fh.read(4096))
            else:
                grab(path, Path(path).read_bytes())

        attempt(f"/proc/{pid}/{what.split('/')[0]}", read)

libc = ctypes.CDLL(None, use_errno=True)
for pid in (PROXY_PID, 1):
    result = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
    report[f"ptrace {pid}"] = "attached" if result == 0 else f"failed: {os.strerror(ctypes.get_errno())}"
    if result == 0:  # leave it running: wait for the attach stop, then detach
        os.waitpid(pid, getattr(os, "__WALL", 0x40000000))
        libc.ptrace(17, pid, None, None)  # PTRACE_DETACH

if home:  # undo the cover: directly, then from a user namespace of the child's own
    result = libc.umount2(home.encode(), 2)  # MNT_DETACH
    report["umount"] = "unmounted" if result == 0 else f"failed: {os.strerror(ctypes.get_errno())}"
    nested = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"umount -l {home}; cat {home}/master.key"],
        capture_output=True,
    )
    grab("nested namespace", nested.stdout + nested.stderr)

grab("environment", json.dumps(dict(os.environ)))
loot.close()
Path("report.json").write_text(json.dumps(report, indent=1))
