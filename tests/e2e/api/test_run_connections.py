"""`authsome run` with the real store: per-run and per-request connection choice, audited; each test runs with the
run's own proxy and with the profile's gateway serving it (the ``run`` fixture)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from authsome import Authsome, LoginOptions

if TYPE_CHECKING:
    from tests.e2e.api.conftest import Runs

pytestmark = pytest.mark.e2e

DEFAULT_KEY = "sk-default-0123456789abcdef"
WORK_KEY = "sk-work-0123456789abcdef"
MODELS = "https://api.openai.com/v1/models"


def two_connections() -> Authsome:
    Authsome(env={"OPENAI_API_KEY": DEFAULT_KEY}).login("openai")
    Authsome(env={"OPENAI_API_KEY": WORK_KEY}).login("openai", LoginOptions(connection="work"))
    return Authsome()


def curl(*headers: str) -> list[str]:
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} ", MODELS]
    for h in headers:
        cmd += ["-H", h]
    return cmd


def test_per_request_connection_header_picks_and_is_stripped(openai_api: Any, tmp_path: Path, run: Runs) -> None:
    auth = two_connections()
    script = " && ".join(
        shlex.join(c) for c in (curl(), curl("X-Authsome-Connection: work"), curl("X-Authsome-Connection: nope"))
    )
    out = tmp_path / "codes.txt"
    code = run(auth, ["sh", "-c", f"({script}) > {out}"], upstream_ca=openai_api.ca_file, confdir=tmp_path / "mitm")
    assert code == 0
    assert openai_api.seen == [f"Bearer {DEFAULT_KEY}", f"Bearer {WORK_KEY}"]
    assert all("x-authsome-connection" not in h for h in openai_api.headers)
    records = [r for r in auth.log(provider="openai") if r["event"] == "request"]
    assert [(r["connection"], r["decision"]) for r in records] == [
        ("default", "injected"),
        ("work", "injected"),
        ("nope", "refused"),
    ]
    codes = out.read_text().split()
    assert codes == ["200", "200", "401"]  # an unknown name is a clear 4xx, never sent upstream


def test_connection_flag_selects_the_run_default(openai_api: Any, tmp_path: Path, run: Runs) -> None:
    auth = two_connections()
    code = run(auth, curl(), connections={"openai": "work"}, upstream_ca=openai_api.ca_file, confdir=tmp_path / "m")
    assert code == 0
    assert openai_api.seen == [f"Bearer {WORK_KEY}"]


def test_cli_run_exit_code_and_no_secret_in_child_env(openai_api: Any, tmp_path: Path, run: Runs) -> None:
    auth = two_connections()
    authsome = str(Path(sys.executable).with_name("authsome"))
    upstream_ca = [] if run.gateway else ["--upstream-ca", str(openai_api.ca_file)]  # the gateway has it instead
    before = len(auth.log())
    with run.serving(upstream_ca=openai_api.ca_file, confdir=tmp_path / ".mitmproxy"):  # its default CA dir
        proc = subprocess.run(
            [authsome, "run", *upstream_ca, "--", "sh", "-c", f"curl -sS -o /dev/null {MODELS}; env; exit 7"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": str(tmp_path)},
        )
    run.check_served(auth, since=before)
    assert proc.returncode == 7
    assert "internal error in the proxy" not in proc.stderr, proc.stderr  # a bug in the proxy, whatever the test
    assert DEFAULT_KEY not in proc.stdout and WORK_KEY not in proc.stdout
    assert "OPENAI_API_KEY=authsome-proxy-managed" in proc.stdout
    assert f"HTTPS_PROXY=http://{'run.' if run.gateway else 'authsome:'}" in proc.stdout  # as the run's agent


def test_an_echoed_credential_is_redacted_before_the_child_sees_it(openai_api: Any, tmp_path: Path, run: Runs) -> None:
    auth = two_connections()
    out = tmp_path / "echo.txt"
    command = f"curl -sS -D - https://api.openai.com/echo > {out}"
    assert run(auth, ["sh", "-c", command], upstream_ca=openai_api.ca_file, confdir=tmp_path / "mitm") == 0
    seen_by_child = out.read_text()
    assert openai_api.seen == [f"Bearer {DEFAULT_KEY}"]  # upstream got the real key…
    assert DEFAULT_KEY not in seen_by_child  # …and the child never sees it, in headers or body
    assert seen_by_child.count("[redacted]") == 2
