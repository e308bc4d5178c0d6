"""`authsome gateway start|stop|status`: a background gateway per profile that a `kill -9` does not confuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from tests.e2e.proxy.conftest import StandIn

from .conftest import AUTHSOME, OPENAI_KEY, Result, client_env, curl, login_all, run_client

pytestmark = pytest.mark.e2e


def cli(env: dict[str, str], *args: str, input: str = "") -> Result:
    proc = subprocess.run([AUTHSOME, *args], input=input, capture_output=True, text=True, env=env, timeout=90)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_start_status_kill_9_start_again_stop(
    gateway_env: dict[str, str], authsome_home: Path, tls_server: StandIn
) -> None:
    login_all()
    token = cli(gateway_env, "agent", "create", "alice", "--provider", "openai", "--quiet").out.strip()
    started = cli(gateway_env, "gateway", "start", "--listen", "127.0.0.1:0", "--json")
    assert started.code == 0, started.err
    first = json.loads(started.out)
    try:
        assert cli(gateway_env, "gateway", "start").code == 1  # one per profile
        status = cli(gateway_env, "gateway", "status", "--json")
        assert status.code == 0 and json.loads(status.out)["healthy"] is True
        env = json.loads(cli(gateway_env, "agent", "env", "alice", "--token-stdin", "--json", input=token).out)["env"]
        assert run_client(curl("https://api.openai.com/v1/models"), client_env(env)).out == "200"

        os.kill(first["pid"], signal.SIGKILL)
        gone = cli(gateway_env, "gateway", "status")
        for _ in range(50):  # not our child: its lock, which the kernel drops with it, tells when it is gone
            if gone.code == 1:
                break
            gone = cli(gateway_env, "gateway", "status")
        assert gone.code == 1 and "no gateway is running" in gone.out

        again = cli(gateway_env, "gateway", "start", "--listen", "127.0.0.1:0", "--json")
        assert again.code == 0, again.err
        second = json.loads(again.out)
        assert second["pid"] != first["pid"]
        # nothing was lost: the same agent, the same stored credential, through the new gateway
        env = json.loads(cli(gateway_env, "agent", "env", "alice", "--token-stdin", "--json", input=token).out)["env"]
        assert env["HTTPS_PROXY"].endswith(second["listen"])
        assert run_client(curl("https://api.openai.com/v1/models"), client_env(env)).out == "200"
        assert tls_server.last().headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert cli(gateway_env, "log", "--verify").code == 0
    finally:
        stopped = cli(gateway_env, "gateway", "stop", "--json")
    assert stopped.code == 0 and json.loads(stopped.out)["stopped"] is True
    assert cli(gateway_env, "gateway", "status").code == 1
    log = (authsome_home / "profiles" / "default" / "gateway" / "gateway.log").read_text()
    assert '"event": "stopped"' in log and OPENAI_KEY not in log and token not in log
