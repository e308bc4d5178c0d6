"""`authsome agent …` and `authsome gateway ca` through the real console script, against a real home on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authsome.errors import UsageError
from authsome.gateway.address import is_loopback, parse_listen, show

AUTHSOME = str(Path(sys.executable).with_name("authsome"))
KEY = "sk-proj-TESTKEY0123456789abcdefghij"


def authsome(*args: str, input: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHSOME, *args], input=input, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60
    )


@pytest.fixture(autouse=True)
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # the CA (~/.mitmproxy) of this test only
    return tmp_path / "user"


def created(*args: str) -> dict[str, Any]:
    res = authsome("agent", "create", *args, "--json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_create_prints_the_token_once_and_list_never_does(authsome_home: Path) -> None:
    assert authsome("login", "openai", env={"OPENAI_API_KEY": KEY}).returncode == 0
    alice = created("alice", "--provider", "openai", "--allow", "openai:GET /v1/**", "--expires", "8h")
    token = alice["token"]
    assert alice["state"] == "active" and alice["allow"] == ["openai:GET /v1/**"] and alice["expires_at"]
    human = authsome("agent", "create", "bob", "-c", "openai=work", "-c", "openai=default")
    assert human.returncode == 0 and "asag_" in human.stdout and "bob created: every connected provider" in human.stdout
    listed = authsome("agent", "list", "--json")
    assert [a["name"] for a in json.loads(listed.stdout)["agents"]] == ["alice", "bob"]
    assert json.loads(listed.stdout)["agents"][1]["connections"] == {"openai": ["work", "default"]}
    words = authsome("agent", "list").stdout
    assert "alice (active, expires in 7h59m): openai; allow: openai:GET /v1/**" in words
    for res in (listed, authsome("agent", "list"), authsome("log", "--json"), authsome("log", "--agent", "alice")):
        assert token not in res.stdout + res.stderr and KEY not in res.stdout + res.stderr
    records = json.loads(authsome("log", "--agent", "alice", "--json").stdout)["records"]
    assert [(r["event"], r["action"]) for r in records] == [("agent", "create")]
    quiet = authsome("agent", "rotate", "alice", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout.strip().startswith("asag_") and quiet.stdout.strip() != token


def test_bad_input_is_refused_before_anything_is_stored(authsome_home: Path) -> None:
    cases = [
        (["agent", "create", "alice", "--provider", "nosuch"], 3, "nosuch"),
        (["agent", "create", "alice", "--expires", "8x"], 2, "--expires '8x' is not a lifetime"),
        (["agent", "create", "alice", "--allow", "openai GET"], 2, "malformed"),
        (["agent", "create", "Alice!"], 2, "invalid agent name"),
        (["agent", "create", "alice", "-c", "openai"], 2, "PROVIDER=NAME"),
        (["agent", "revoke", "nobody"], 2, "no agent called 'nobody'"),
    ]
    for args, code, text in cases:
        res = authsome(*args)
        assert (res.returncode, text in res.stderr) == (code, True), (args, res.stderr)
    assert json.loads(authsome("agent", "list", "--json").stdout) == {"agents": []}


def test_gateway_start_refuses_bad_options_itself(authsome_home: Path) -> None:
    """Refused with exit 2 and the option's own hint, not as a background process that failed to start."""
    cases = [
        (["gateway", "start", "--listen", "0.0.0.0:99999"], "--listen '0.0.0.0:99999' is not HOST:PORT"),
        (["gateway", "start", "--upstream", "socks5://proxy:1080"], "is not an http:// or https:// proxy URL"),
    ]
    for args, text in cases:
        res = authsome(*args)
        assert (res.returncode, text in res.stderr, "gateway.log" in res.stderr) == (2, True, False), res.stderr
    assert authsome("gateway", "status").returncode == 1  # nothing was started


def test_durations_read_alike(authsome_home: Path) -> None:
    assert authsome("log", "--since", "2w").returncode == 0  # weeks, as --expires takes them
    assert authsome("log", "--since", "0s").returncode == 0
    for bad in ("5x", "\u00b2h", "h"):  # (a superscript two is a digit to str.isdigit, not to int)
        res = authsome("log", "--since", bad)
        assert res.returncode == 2 and f"--since {bad!r} is not an age" in res.stderr, res.stderr
    assert created("alice", "--expires", "2w")["expires_at"]


def test_revoke_then_rotate_is_refused(authsome_home: Path) -> None:
    created("alice")
    res = authsome("agent", "revoke", "alice")
    assert res.returncode == 0 and "agent alice revoked at" in res.stdout
    assert json.loads(authsome("agent", "list", "--json").stdout)["agents"][0]["state"] == "revoked"
    again = authsome("agent", "rotate", "alice")
    assert again.returncode == 2 and "agent alice is revoked" in again.stderr


def test_agent_env_prints_what_an_agent_needs(authsome_home: Path, user_home: Path) -> None:
    assert authsome("login", "openai", env={"OPENAI_API_KEY": KEY}).returncode == 0
    token = created("alice", "--provider", "openai")["token"]
    placeholder = authsome("agent", "env", "alice", "--gateway", "10.1.2.3:8931")
    lines = dict(line.split("=", 1) for line in placeholder.stdout.splitlines())
    assert lines["HTTPS_PROXY"] == lines["http_proxy"] == "http://alice:<token>@10.1.2.3:8931"
    assert lines["OPENAI_API_KEY"] == "authsome-proxy-managed" and lines["NO_PROXY"] == "localhost,127.0.0.1,::1"
    bundle = Path(lines["SSL_CERT_FILE"])
    assert lines["REQUESTS_CA_BUNDLE"] == lines["NODE_EXTRA_CA_CERTS"] == str(bundle)
    ca = (user_home / ".mitmproxy" / "mitmproxy-ca-cert.pem").read_text().strip()
    assert ca in bundle.read_text()  # with the system CAs
    assert KEY not in placeholder.stdout
    with_token = authsome("agent", "env", "alice", "--token-stdin", "--format", "json", input=token + "\n")
    data = json.loads(with_token.stdout)
    assert data["env"]["HTTPS_PROXY"] == f"http://alice:{token}@127.0.0.1:8931"
    assert data["ca_pem"].strip() == ca and data["gateway"] == "127.0.0.1:8931"
    moved = authsome("agent", "env", "alice", "--ca-path", "/etc/authsome/ca.pem").stdout
    assert "SSL_CERT_FILE=/etc/authsome/ca.pem" in moved and "CURL_CA_BUNDLE=/etc/authsome/ca.pem" in moved
    shell = authsome("agent", "env", "alice", "--format", "shell").stdout
    assert "export HTTPS_PROXY='http://alice:<token>@127.0.0.1:8931'" in shell
    wrong = authsome("agent", "env", "alice", "--token-stdin", input="asag_wrong\n")
    assert wrong.returncode == 4 and "not agent alice's token" in wrong.stderr
    assert authsome("gateway", "ca").stdout.strip() == ca
    assert ca in authsome("gateway", "ca", "--bundle").stdout


def test_listen_addresses() -> None:
    assert parse_listen("") == ("127.0.0.1", 8931)
    assert parse_listen(":0") == ("127.0.0.1", 0)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:9000") == ("::1", 9000) and show(("::1", 9000)) == "[::1]:9000"
    assert parse_listen("localhost") == ("localhost", 8931)
    for bad in ("host:port", "1.2.3.4:70000", "[::1", "[::1]x"):
        with pytest.raises(UsageError, match="is not HOST:PORT"):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("gateway.example")
