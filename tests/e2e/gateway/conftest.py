"""A real `authsome gateway serve` (a subprocess, on loopback) in front of the TLS stand-ins of the proxy tests.

The gateway's upstream names (api.openai.com, api.anthropic.com, …) are mapped to the stand-in by
``AUTHSOME_TEST_RESOLVE``; it trusts the stand-ins' CA through ``SSL_CERT_FILE``, as a user's gateway would trust a
corporate CA. Clients run as real processes with only what ``authsome agent env`` printed (plus PATH and HOME).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.proxy import conftest as proxy_tests
from tests.e2e.proxy.conftest import HOSTS, StandIn

from authsome import Authsome, LoginOptions

# The proxy tests' stand-ins, registered here as fixtures of this directory too.
test_ca = proxy_tests.test_ca
test_ca_file = proxy_tests.test_ca_file
tls_server = proxy_tests.tls_server

AUTHSOME = str(Path(sys.executable).with_name("authsome"))
OPENAI_KEY = "sk-default-0123456789abcdef"
OPENAI_WORK_KEY = "sk-work-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-REAL0123456789abcdef"
REAL_SECRETS = (OPENAI_KEY, OPENAI_WORK_KEY, ANTHROPIC_KEY)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Gateway:
    """A running gateway: its process, its address, its event lines, and the CLI with the same home."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    home: Path
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)
    listen: str = ""
    pump: threading.Thread | None = None  # reads the process's event lines into ``events``

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def cli(self, *args: str, input: str | None = None) -> Result:
        proc = subprocess.run(
            [AUTHSOME, *args], input=input or "", capture_output=True, text=True, env=self.env, timeout=60
        )
        assert "internal error in the proxy" not in proc.stderr, proc.stderr  # (a run's own proxy, say): a bug
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """The first event (already seen or still to come) that ``match`` accepts."""
        for event in self.seen:
            if match(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such gateway event within {timeout} s; saw {self.seen[-5:]}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(event)
            if match(event):
                return event

    def agent(self, name: str, *args: str) -> str:
        """Create an agent; its token."""
        res = self.cli("agent", "create", name, *args, "--quiet")
        assert res.code == 0, res.err
        return res.out.strip()

    def agent_env(self, name: str, token: str, *extra: str) -> dict[str, str]:
        """The agent's environment, exactly as `authsome agent env --format json` printed it."""
        res = self.cli("agent", "env", name, "--token-stdin", "--format", "json", *extra, input=token + "\n")
        assert res.code == 0, res.err
        return dict(res.json()["env"])

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def internal_errors(self) -> list[str]:
        """Once the process has ended: the lines in which its proxy said it hit an internal error (a bug)."""
        if self.pump is not None:
            self.pump.join(5)
        while not self.events.empty():
            self.seen.append(self.events.get_nowait())
        return [e["line"] for e in self.seen if e.get("event") == "text" and "internal error" in e.get("line", "")]

    def follow(self) -> None:
        """Read the process's event lines (stderr, one JSON object each) into ``events`` from now on."""
        assert self.process.stderr is not None
        self.pump = threading.Thread(target=_pump, args=(self.process.stderr, self.events), daemon=True)
        self.pump.start()


def _pump(stream: Any, events: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        try:
            events.put(json.loads(line))
        except ValueError:
            events.put({"event": "text", "line": line.rstrip("\n")})


def login_all() -> None:
    """openai (default and work) and anthropic, logged in through the real store."""
    Authsome(env={"OPENAI_API_KEY": OPENAI_KEY}).login("openai")
    Authsome(env={"OPENAI_API_KEY": OPENAI_WORK_KEY}).login("openai", LoginOptions(connection="work"))
    Authsome(env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY}).login("anthropic")


@pytest.fixture
def gateway_env(authsome_home: Path, tls_server: StandIn, test_ca_file: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of the gateway and of the CLI: the test home, stand-ins mapped in, their CA trusted."""
    resolve = ",".join(f"{h}:443=127.0.0.1:{tls_server.port}" for h in HOSTS)
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(user_home),  # ~/.mitmproxy (the CA) and ~/.cache (trust) of this test only
        "AUTHSOME_HOME": str(authsome_home),
        "AUTHSOME_KEY_SOURCE": "file",
        "AUTHSOME_TEST_RESOLVE": resolve,
        "SSL_CERT_FILE": str(test_ca_file),
    }


StartGateway = Callable[..., Gateway]


@pytest.fixture
def start_gateway(gateway_env: dict[str, str], authsome_home: Path) -> Iterator[StartGateway]:
    """``start_gateway(*serve_args)``: `authsome gateway serve --json` on 127.0.0.1:<free port>, once listening."""
    started: list[Gateway] = []

    def start(*args: str, listen: str = "127.0.0.1:0") -> Gateway:
        process = subprocess.Popen(
            [AUTHSOME, "gateway", "serve", "--listen", listen, "--json", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=gateway_env,
        )
        gateway = Gateway(process, dict(gateway_env), authsome_home)
        started.append(gateway)
        gateway.follow()
        gateway.listen = gateway.wait_for(lambda e: e.get("event") in ("listening", "text"), 60).get("listen", "")
        assert gateway.listen, f"the gateway did not start: {gateway.seen}"
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(10)
    errors = [line for gateway in started for line in gateway.internal_errors()]
    assert not errors, f"a gateway's proxy hit an internal error: {errors}"


def client_env(agent_env: dict[str, str], **extra: str) -> dict[str, str]:
    """What a client process gets: the agent's variables, PATH and a HOME of its own; nothing else."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **agent_env, **extra}


def run_client(command: list[str], env: dict[str, str], timeout: float = 60) -> Result:
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def curl(url: str, *args: str) -> list[str]:
    return ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args, url]


def py(script: str) -> list[str]:
    return [sys.executable, "-c", script]
