"""The child process: exit codes, signals, nesting, start-up failures and temporary files."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from authsome.errors import AuthsomeError, UsageError

from .conftest import GATEWAY, SECRETS, InProcessGateway, RunFn, StandIn, base_env, bundled, py

pytestmark = pytest.mark.e2e

RUNNER = """
import os, pathlib, sys
from authsome.proxy.runner import RunConfig, run_command
gateway = None
if os.environ.get("TEST_GATEWAY"):  # the user's gateway is up: it serves the run, as it serves `authsome run`
    from authsome.gateway.client import lease_for_run
    from authsome.gateway.state import GatewayFiles
    from authsome.policy import Policy
    gateway = lease_for_run(GatewayFiles(pathlib.Path(os.environ["TEST_GATEWAY"])), [], {}, Policy())
    assert gateway is not None, "the gateway gave the run no agent"
config = RunConfig(command=sys.argv[2:], routes=[], headers_for=lambda p, c: {}, confdir=pathlib.Path(sys.argv[1]),
                   isolate=os.environ["TEST_ISOLATE"] == "1", gateway=gateway)
sys.exit(run_command(config))
"""
CHILD = """
import os, pathlib, signal, sys, time
ready, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def on_term(signum, frame):
    marker.write_text(signal.Signals(signum).name)
    sys.exit(7)
if sys.argv[3] == "catch":
    signal.signal(signal.SIGTERM, on_term)
ready.write_text(f"{os.getpid()} {os.environ['SSL_CERT_FILE']} {os.environ['HTTPS_PROXY']}")
time.sleep(30)
"""


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where run_command's temporary directory goes, so a test can check it is gone."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_exit_code_is_the_childs(run: RunFn, private_tmp: Path) -> None:
    assert run(["sh", "-c", "exit 42"]).code == 42
    assert run(["sh", "-c", "kill -9 $$"]).code == 128 + 9
    assert list(private_tmp.iterdir()) == []


def test_command_not_found_and_not_executable(run: RunFn, tmp_path: Path) -> None:
    missing = run(["definitely-not-a-command-authsome"])
    assert missing.code == 127 and "command not found" in missing.err
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    assert run([str(script)]).code == 126
    assert run([str(tmp_path)]).code == 126
    assert run([str(tmp_path / "nope")]).code == 127


def test_nesting_is_refused_unless_allowed(run: RunFn) -> None:
    with pytest.raises(UsageError, match="already inside `authsome run`") as info:
        run(["true"], env={"AUTHSOME_RUN": "1"})
    assert "--allow-nested" in (info.value.hint or "")
    nested = run(py("import os; print(os.environ['AUTHSOME_RUN'])"), env={"AUTHSOME_RUN": "1"}, allow_nested=True)
    assert nested.code == 0 and nested.out.strip() == "1"


def test_bad_configuration_never_starts_the_child(run: RunFn, tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    with pytest.raises(UsageError, match="routed twice"):
        run(["touch", str(flag)], providers=(bundled("openai"), bundled("openai")))
    with pytest.raises(UsageError, match="resolve entry"):
        run(["touch", str(flag)], env={"AUTHSOME_TEST_RESOLVE": "api.openai.com=nowhere"})
    with pytest.raises(UsageError, match="upstream proxy"):
        run(["touch", str(flag)], upstream_proxy="socks5://127.0.0.1:1080")
    assert not flag.exists()


def test_proxy_start_failure_is_explained_and_cleaned_up(
    run: RunFn, tmp_path: Path, private_tmp: Path, mode: str
) -> None:
    if mode == GATEWAY:
        pytest.skip("a CA directory the proxy cannot use stops the gateway itself from starting: no gateway to serve")
    not_a_dir = tmp_path / "confdir-file"
    not_a_dir.write_text("x")
    flag = tmp_path / "ran"
    with pytest.raises(AuthsomeError, match="the proxy did not start") as info:
        run(["touch", str(flag)], confdir=not_a_dir)
    assert "--verbose" in (info.value.hint or "")
    assert not flag.exists()
    assert list(private_tmp.iterdir()) == []


@pytest.fixture(params=[True, False], ids=["isolated", "not-isolated"])
def isolate(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def start_runner(
    tmp_path: Path, mode: str, *command: str, isolate: bool = True, gateway: InProcessGateway | None = None
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    ready, marker = tmp_path / "ready", tmp_path / "marker"
    child = command or (sys.executable, "-c", CHILD, str(ready), str(marker), mode)
    env = {**base_env(), "TMPDIR": str(tmp_path), "TEST_ISOLATE": "1" if isolate else "0"}
    if gateway is not None:
        env["TEST_GATEWAY"] = str(gateway.files.root)
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path / "confdir"), *child], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text()):
        assert proc.poll() is None, "the runner exited early"
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return proc, ready, marker


def processes_with(argument: Path) -> list[int]:
    """Host pids of the processes whose command line holds ``argument`` (a sandboxed child only knows its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(argument).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_cleaned(proc: subprocess.Popen[bytes], ready: Path, gateway: InProcessGateway | None) -> None:
    assert not list(ready.parent.glob("authsome-run-*")), "the run's temporary directory was left behind"
    deadline = time.monotonic() + 5
    while processes_with(ready) and time.monotonic() < deadline:  # an orphan is reaped by init asynchronously
        time.sleep(0.02)
    assert processes_with(ready) == [], "the child outlived the run"
    if gateway is not None:
        assert gateway.refuses(proxy_url(ready)), "the run's gateway agent outlived the run"


def proxy_url(ready: Path) -> str:
    """The proxy URL the child was given (it wrote it to its ``ready`` file)."""
    return ready.read_text().split()[2]


def test_sigterm_is_forwarded_and_the_childs_exit_code_returned(
    tmp_path: Path, isolate: bool, gateway: InProcessGateway | None
) -> None:
    proc, ready, marker = start_runner(tmp_path, "catch", isolate=isolate, gateway=gateway)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 7
    assert marker.read_text() == "SIGTERM"
    assert_cleaned(proc, ready, gateway)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_signal_death_is_128_plus_n(
    tmp_path: Path, sig: signal.Signals, isolate: bool, gateway: InProcessGateway | None
) -> None:
    proc, ready, _ = start_runner(tmp_path, "default", isolate=isolate, gateway=gateway)
    proc.send_signal(sig)
    assert proc.wait(20) == 128 + sig
    assert_cleaned(proc, ready, gateway)


def test_sigkill_of_the_run_takes_the_child_down_and_its_directory_is_swept(
    tmp_path: Path, isolate: bool, gateway: InProcessGateway | None
) -> None:
    proc, ready, _ = start_runner(tmp_path, "default", isolate=isolate, gateway=gateway)
    if gateway is not None:
        assert not gateway.refuses(proxy_url(ready))  # the run's agent, while the run lives
    proc.kill()
    proc.wait(20)
    deadline = time.monotonic() + 5
    while processes_with(ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes_with(ready) == [], "the child outlived a SIGKILLed run"
    if gateway is not None:  # the kernel closed the run's control connection: the gateway ends its agent
        while not gateway.refuses(proxy_url(ready)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gateway.refuses(proxy_url(ready)), "the agent of a SIGKILLed run outlived it"
    [run_dir] = tmp_path.glob("authsome-run-*")  # TMPDIR of the run
    assert run_dir.exists()  # nobody could clean up after SIGKILL ...
    ready.unlink()
    again, _, _ = start_runner(tmp_path, "default", isolate=isolate, gateway=gateway)
    assert not run_dir.exists()  # ... so the next run sweeps it
    again.send_signal(signal.SIGTERM)
    again.wait(20)


def test_an_allowed_nested_run_chains_through_the_outer_one(run: RunFn, standin: StandIn, confdir: Path) -> None:
    inner = f"""
import json, pathlib, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import bundled
from authsome.proxy.runner import Route, RunConfig, run_command
sys.exit(run_command(RunConfig(
    command=["curl", "-sS", "--fail", "https://api.openai.com/v1/models"], routes=[Route(bundled("openai"))],
    headers_for=lambda p, c: {{"Authorization": "Bearer sk-inner"}}, allow_nested=True,
    confdir=pathlib.Path({str(confdir)!r}))))
"""
    result = run(py(inner), providers=(bundled("openai"),))
    assert result.code == 0, result.err
    assert standin.last().headers["authorization"] == f"Bearer {SECRETS['openai']}-default"  # the outer run's


def test_a_run_that_ends_before_its_proxy_has_started_prints_nothing(authsome_home: Path, tmp_path: Path) -> None:
    """`run -- true` usually ends while mitmproxy is still being imported: the proxy is stopped without a trace (the
    front door's socket was once closed under the loop still serving it, and asyncio printed a traceback)."""
    authsome = str(Path(sys.executable).with_name("authsome"))
    env = base_env({"AUTHSOME_HOME": str(authsome_home), "AUTHSOME_KEY_SOURCE": "file", "HOME": str(tmp_path)})
    for _ in range(8):
        done = subprocess.run([authsome, "run", "--", "true"], env=env, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
