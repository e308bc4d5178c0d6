"""``authsome gateway start|stop|status``: one background gateway per user and profile.

``start`` runs ``authsome gateway serve`` in a new session, its lines appended to ``gateway.log``, and returns once it
listens (or says why it did not). ``stop`` sends ``SIGTERM`` (the gateway drains, then exits) and waits; ``status``
reads the state file and asks the gateway's ``/healthz``. Whether one runs is decided by its lock, never by a pid
file alone, so a gateway killed with ``SIGKILL`` is simply gone, and ``start`` starts a new one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from authsome.errors import AuthsomeError
from authsome.gateway.state import AlreadyRunning, GatewayFiles, is_running, read_state

START_TIMEOUT = 60.0
POLL = 0.1


def start(files: GatewayFiles, serve_args: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    """Start ``authsome <serve_args>`` in the background; its state once it listens."""
    current = read_state(files)
    if current is not None or is_running(files):
        pid = f" (pid {current['pid']})" if current else ""
        raise AlreadyRunning(f"a gateway already serves this profile{pid}", "`authsome gateway stop` ends it")
    files.ensure()
    log_fd = os.open(files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "authsome", *serve_args],  # -P: not the working directory on sys.path
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            env=dict(env),
            start_new_session=True,  # not in the terminal's process group: Ctrl-C there does not reach it
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = read_state(files)
        if state is not None and state.get("pid") == process.pid:
            return state
        code = process.poll()
        if code is not None:
            raise AuthsomeError(
                f"the gateway did not start (exit code {code}): {_last_line(files)}", f"see {files.log}"
            )
        time.sleep(POLL)
    process.terminate()
    raise AuthsomeError(f"the gateway did not start within {START_TIMEOUT:g} s", f"see {files.log}")


def stop(files: GatewayFiles, timeout: float = 30.0) -> dict[str, Any]:
    """Stop the background gateway (``SIGTERM``, then ``SIGKILL`` after ``timeout``); what was stopped."""
    state = read_state(files)
    if state is None:
        return {"running": False, "stopped": False}
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_running(files) and time.monotonic() < deadline:
        time.sleep(POLL)
    killed = is_running(files)
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return {"running": False, "stopped": True, "pid": pid, "killed": killed}


def status(files: GatewayFiles) -> dict[str, Any]:
    """Whether a gateway serves this profile, where, since when, and whether it answers ``/healthz``."""
    state = read_state(files)
    if state is None:
        return {"running": is_running(files), "healthy": False, "log": str(files.log)}
    return {**state, "running": True, "healthy": healthy(str(state["listen"])), "log": str(files.log)}


def healthy(listen: str, timeout: float = 2.0) -> bool:
    """Whether the gateway at ``listen`` answers ``GET /healthz`` with 200 (a wildcard address is asked locally)."""
    from authsome.providers.hosts import split_host_port

    try:
        host, port = split_host_port(listen, None)
    except ValueError:
        return False
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104  (asked, not bound)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _last_line(files: GatewayFiles) -> str:
    """Why the background gateway stopped: its last error line (text or JSON), else its last line."""
    try:
        lines = files.log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines[-20:]):
        if line.startswith("Error: "):
            return line.removeprefix("Error: ")
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(line).get("message")
            if isinstance(message, str) and message:
                return message
    return lines[-1] if lines else "no output"
