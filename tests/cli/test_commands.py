"""The everyday commands, driven through the real console script against a real home on disk."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
from pathlib import Path

import httpx

from tests.cli.conftest import AUTHSOME, Runner

KEY = "sk-proj-TESTKEY0123456789abcdefghij"


def login_openai(authsome: Runner, key: str = KEY, *args: str) -> None:
    res = authsome("login", "openai", *args, env={"OPENAI_API_KEY": key})
    assert res.code == 0, res.err


def assert_no_key(res: object, key: str = KEY) -> None:
    assert key not in res.out and key not in res.err  # type: ignore[attr-defined]


def test_list_on_a_fresh_machine_creates_a_private_home(authsome: Runner, authsome_home: Path) -> None:
    res = authsome("list", "--json")
    assert res.code == 0, res.err
    providers = {p["name"]: p for p in res.json()["providers"]}
    assert len(providers) >= 45
    assert providers["openai"]["state"] == "available"
    assert stat.S_IMODE(authsome_home.stat().st_mode) == 0o700
    for d, _dirs, files in os.walk(authsome_home):
        for f in files:
            assert stat.S_IMODE(Path(d, f).stat().st_mode) == 0o600


def test_login_from_env_then_list_get_and_reveal(authsome: Runner, authsome_home: Path) -> None:
    login_openai(authsome)
    listed = {p["name"]: p for p in authsome("list", "--json").json()["providers"]}
    assert listed["openai"]["state"] == "connected"
    assert listed["openai"]["connections"][0]["status"] == "connected"
    got = authsome("get", "openai", "--json")
    assert got.code == 0 and got.json()["status"] == "connected"
    assert_no_key(got)
    human = authsome("get", "openai")
    assert "***" in human.out
    assert_no_key(human)
    refused = authsome("get", "openai", "--field", "api_key")
    assert refused.code == 2 and "--show-secret" in refused.err
    assert_no_key(refused)
    shown = authsome("get", "openai", "--field", "api_key", "--show-secret")
    assert shown.code == 0 and shown.out.strip() == KEY


def test_login_from_stdin_pipe(authsome: Runner) -> None:
    res = authsome("login", "anthropic", input="sk-ant-api03-PIPEDKEY0123456789\n")
    assert res.code == 0, res.err
    assert authsome("get", "anthropic", "--field", "api_key", "--show-secret").out.strip() == (
        "sk-ant-api03-PIPEDKEY0123456789"
    )


def test_second_login_needs_force_and_keeps_the_first(authsome: Runner) -> None:
    login_openai(authsome)
    again = authsome("login", "openai", env={"OPENAI_API_KEY": "sk-other-0123456789abcdef"})
    assert again.code == 2 and "--force" in again.err
    assert authsome("get", "openai", "--field", "api_key", "--show-secret").out.strip() == KEY
    login_openai(authsome, "sk-other-0123456789abcdef", "--force")
    assert authsome("get", "openai", "--field", "api_key", "--show-secret").out.strip() == "sk-other-0123456789abcdef"


def test_bad_keys_are_refused_without_echoing_them(authsome: Runner, authsome_home: Path) -> None:
    bad = authsome("login", "openai", env={"OPENAI_API_KEY": "not-an-openai-key-SECRETISH"})
    assert bad.code == 2
    assert "not-an-openai-key-SECRETISH" not in bad.err + bad.out
    ctrl = authsome("login", "anthropic", input="sk-ant-abc\x1b[31mdef\n")
    assert ctrl.code == 2 and "control" in ctrl.err.lower()
    assert authsome("get", "openai").code == 5


def test_connections_are_named(authsome: Runner) -> None:
    login_openai(authsome)
    res = authsome("login", "openai", "--connection", "work", env={"OPENAI_API_KEY": "sk-work-0123456789abcdef"})
    assert res.code == 0, res.err
    assert authsome("get", "openai", "-c", "work", "--field", "api_key", "--show-secret").out.strip() == (
        "sk-work-0123456789abcdef"
    )
    conns = {c["connection"] for c in authsome("inspect", "openai", "--json").json()["connections"]}
    assert conns == {"default", "work"}


def test_export_formats(authsome: Runner, tmp_path: Path) -> None:
    acme = {
        "schema_version": 1,
        "name": "acme",
        "display_name": "Acme",
        "auth_type": "api_key",
        "flow": "api_key",
        "api_key": {"header_name": "X-Acme-Key", "header_prefix": "", "env_var": "ACME_KEY"},
        "host_url": "api.acme.test",
        "export": {"env": {"ACME_KEY": "api_key"}},
    }
    (tmp_path / "acme.json").write_text(json.dumps(acme))
    assert authsome("register", str(tmp_path / "acme.json")).code == 0
    tricky = 'it\'s-$(whoami)-`id`-"$HOME"-0123456789'
    res = authsome("login", "acme", env={"ACME_KEY": tricky})
    assert res.code == 0, res.err
    env_out = authsome("export", "acme", "--format", "env").out
    assert f"ACME_KEY={tricky}" in env_out
    as_json = json.loads(authsome("export", "acme", "--format", "json").out)
    assert as_json == {"ACME_KEY": tricky}
    shell = authsome("export", "acme", "--format", "shell", "--prefix", "MY_").out
    evaluated = subprocess.run(
        ["bash", "-c", f'{shell}\nprintf %s "$MY_ACME_KEY"'], capture_output=True, text=True, check=True
    )
    assert evaluated.stdout == tricky
    for prefix in ("1_", "MY-", "\u00e9_"):  # no shell takes such a name: refused, and no export is recorded
        res = authsome("export", "acme", "--format", "shell", "--prefix", prefix)
        assert res.code == 2 and "cannot start a variable name" in res.err and tricky not in res.out + res.err
    exports = [r for r in json.loads(authsome("log", "--json").out)["records"] if r["event"] == "export"]
    assert len(exports) == 3  # env, json and shell above
    login_openai(authsome)
    assert authsome("export", "openai").out.strip() == f"OPENAI_API_KEY={KEY}"


def test_logout_and_remove(authsome: Runner, authsome_home: Path) -> None:
    login_openai(authsome)
    assert authsome("logout", "opneai").code == 3  # an unknown provider, not a missing connection
    assert authsome("logout", "openai").code == 0
    assert authsome("get", "openai").code == 5
    login_openai(authsome)
    assert authsome("remove", "openai", "--json").code == 0
    assert authsome("get", "openai").code == 5


def test_oauth_options_are_refused_for_an_api_key_provider(authsome: Runner) -> None:
    res = authsome("login", "openai", "--flow", "pkce", env={"OPENAI_API_KEY": KEY})
    assert res.code == 2
    assert "--flow, --scopes and --client-id do not apply" in res.err
    assert authsome("get", "openai").code == 5  # nothing stored
    assert authsome("login", "openai", "--flow", "api_key", env={"OPENAI_API_KEY": KEY}).code == 0


def test_revoke_says_what_was_revoked_remotely(authsome: Runner) -> None:
    login_openai(authsome)  # an API key: OpenAI has no revocation endpoint authsome can call
    res = authsome("revoke", "openai")
    assert res.code == 0, res.err
    assert "nothing revoked remotely (no revocation endpoint): default" in res.out
    assert "removed locally: default" in res.out
    assert "revoked at the provider" not in res.out
    assert authsome("get", "openai").code == 5


def test_unknown_provider_suggests_a_name(authsome: Runner) -> None:
    res = authsome("get", "opneai")
    assert res.code == 3
    assert "openai" in res.err and res.err.startswith("Error:")
    assert "Traceback" not in res.err


def test_errors_are_json_with_json_flag(authsome: Runner) -> None:
    res = authsome("get", "openai", "--json")
    assert res.code == 5
    assert res.json()["exit_code"] == 5 and "authsome login openai" in res.json()["hint"]


def test_register_custom_provider_and_override(authsome: Runner, tmp_path: Path) -> None:
    acme = {
        "schema_version": 1,
        "name": "acme",
        "display_name": "Acme",
        "auth_type": "api_key",
        "flow": "api_key",
        "api_key": {"header_name": "X-Acme-Key", "header_prefix": "", "env_var": "ACME_KEY"},
        "host_url": "api.acme.test",
        "export": {"env": {"ACME_KEY": "api_key"}},
    }
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(acme))
    assert authsome("register", str(path)).code == 0
    assert authsome("register", str(path)).code == 2  # exists: needs --force
    assert authsome("register", str(path), "--force").code == 0
    assert authsome("login", "acme", env={"ACME_KEY": "acme-secret-1"}).code == 0
    inspected = authsome("inspect", "acme", "--json").json()
    assert inspected["source"] == "user"
    override = {**acme, "name": "openai", "display_name": "My OpenAI"}
    path.write_text(json.dumps(override))
    assert authsome("register", str(path)).code == 0
    assert authsome("inspect", "openai", "--json").json()["provider"]["display_name"] == "My OpenAI"
    assert authsome("remove", "openai").code == 0
    assert authsome("inspect", "openai", "--json").json()["source"] == "bundled"


def test_register_rejects_bad_files(authsome: Runner, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    res = authsome("register", str(path))
    assert res.code == 2 and "bad.json" in res.err
    path.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "name": "evil",
                "display_name": "Evil",
                "auth_type": "api_key",
                "flow": "api_key",
                "host_url": "regex:.*",
                "api_key": {"env_var": "EVIL"},
            }
        )
    )
    res = authsome("register", str(path))
    assert res.code == 2 and "host_url" in res.err
    assert "evil" not in {p["name"] for p in authsome("list", "--json").json()["providers"]}


def test_tampered_record_is_named_and_others_still_listed(authsome: Runner, authsome_home: Path) -> None:
    login_openai(authsome)
    assert authsome("login", "anthropic", input="sk-ant-api03-OTHERKEY0123456\n").code == 0
    db = sqlite3.connect(authsome_home / "profiles" / "default" / "store.db")
    doc = json.loads(db.execute("SELECT value FROM records WHERE key='connection/openai/default'").fetchone()[0])
    ct = doc["secrets"]["api_key"]["ciphertext"]
    doc["secrets"]["api_key"]["ciphertext"] = ("A" if ct[0] != "A" else "B") + ct[1:]
    db.execute("UPDATE records SET value=? WHERE key='connection/openai/default'", (json.dumps(doc),))
    db.commit()
    db.close()
    listed = authsome("list", "--json")
    assert listed.code == 0
    states = {p["name"]: p["state"] for p in listed.json()["providers"]}
    assert states["anthropic"] == "connected"
    res = authsome("export", "openai")
    assert res.code == 7 and "openai/default" in res.err and "Traceback" not in res.err
    doctor = authsome("doctor", "--json")
    assert doctor.code == 1
    assert any(not c["ok"] and "openai/default" in c["detail"] for c in doctor.json()["checks"])


def test_profiles_are_separate(authsome: Runner) -> None:
    login_openai(authsome)
    assert authsome("--profile", "work", "get", "openai").code == 5
    assert authsome("get", "openai", "--profile", "work").code == 5
    assert authsome("get", "openai").code == 0


def test_whoami_and_doctor(authsome: Runner, authsome_home: Path) -> None:
    login_openai(authsome)
    who = authsome("whoami", "--json").json()
    assert who["home"] == str(authsome_home) and who["key_source"] == "file" and who["profile"] == "default"
    doc = authsome("doctor", "--json")
    assert doc.code == 0, doc.out
    assert {c["check"] for c in doc.json()["checks"]} >= {"layout", "key source", "store round trip"}


def test_symlinked_home_is_refused(authsome: Runner, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    res = authsome("list", env={"AUTHSOME_HOME": str(link)})
    assert res.code == 7 and "symlink" in res.err


def test_usage_errors_exit_2(authsome: Runner) -> None:
    assert authsome("export", "openai", "--format", "yaml").code == 2
    assert authsome("frobnicate").code == 2
    assert authsome("login", "openai", "--connection", "Bad Name!").code == 2


def test_log_shows_events_and_detects_tampering(authsome: Runner, authsome_home: Path) -> None:
    login_openai(authsome)
    assert authsome("export", "openai").code == 0
    records = authsome("log", "--json", "--provider", "openai").json()["records"]
    assert [r["event"] for r in records] == ["login", "export"]
    assert_no_key(authsome("log"))
    assert authsome("log", "--verify").code == 0
    trail = authsome_home / "profiles" / "default" / "audit.jsonl"
    lines = trail.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["provider"] = "anthropic"
    trail.write_text("\n".join([json.dumps(doc, sort_keys=True), *lines[1:]]) + "\n")
    tampered = authsome("log", "--verify")
    assert tampered.code == 1 and "TAMPERED" in tampered.out
    assert authsome("log", "--since", "5x").code == 2


# -- a login without a key and without a terminal (issue 12, item 1) ---------------------------------------------


def test_login_without_key_or_terminal_fails_at_once(authsome: Runner, authsome_home: Path) -> None:
    """An agent or a script gets the one-line error (exit 2) at once, not a local key form that waits 300 s."""
    no_stdin = subprocess.run(
        [AUTHSOME, "login", "anthropic"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20
    )
    assert no_stdin.returncode == 2 and no_stdin.stdout == ""
    assert no_stdin.stderr.splitlines()[0] == (
        "Error: no API key for Anthropic: no environment variable, no stdin and no terminal"
    )
    assert "ANTHROPIC_API_KEY" in no_stdin.stderr and "http://127.0.0.1" not in no_stdin.stderr
    empty_pipe = authsome("--json", "login", "anthropic", input="")
    assert empty_pipe.code == 2 and empty_pipe.err == ""
    assert empty_pipe.json()["error"] == "UsageError"
    assert authsome("get", "anthropic").code == 5
    both = authsome("login", "anthropic", "--browser", "--no-browser")
    assert both.code == 2 and "--browser and --no-browser contradict each other" in both.err


def test_login_browser_flag_opens_the_key_form_without_a_terminal(authsome_home: Path) -> None:
    """--browser asks for the form explicitly: its URL is printed, the key typed into it is stored."""
    env = {**os.environ, "BROWSER": "false"}  # no browser starts: the URL is printed instead
    proc = subprocess.Popen(
        [AUTHSOME, "login", "anthropic", "--browser"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/[\w-]+/", line)
        assert match, line
        with httpx.Client() as client:
            page = client.get(match.group(0))
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            sent = client.post(match.group(0), data={"csrf": csrf, "secret": "sk-ant-api03-FORMKEY0123456789"})
            assert sent.status_code == 200
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.communicate()
    shown = subprocess.run(
        [AUTHSOME, "get", "anthropic", "--field", "api_key", "--show-secret"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert shown.stdout.strip() == "sk-ant-api03-FORMKEY0123456789"


# -- honest, readable answers (issue 12, item 5) ------------------------------------------------------------------


def test_remove_with_nothing_stored_says_so(authsome: Runner) -> None:
    res = authsome("remove", "openai")
    assert res.code == 5
    assert res.err.splitlines() == [
        "Error: no credential stored for openai",
        "Hint: run `authsome list` to see what is stored",
    ]
    assert authsome("remove", "nosuch").code == 3
    login_openai(authsome)
    removed = authsome("remove", "openai")
    assert removed.code == 0 and "removed 1 connection" in removed.out


def test_get_shows_times_in_iso_8601_and_no_python_reprs(authsome: Runner) -> None:
    login_openai(authsome)
    out = authsome("get", "openai").out
    assert re.search(r"^created_at: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", out, re.M), out
    assert re.search(r"\d{10}\.\d", out) is None  # no raw epoch
    assert "{" not in out and "'" not in out and "True" not in out and "False" not in out
    assert "metadata.source: env" in out


def test_inspect_prints_one_format_per_mode(authsome: Runner) -> None:
    human = authsome("inspect", "github")
    assert human.code == 0
    for line in human.out.splitlines():
        assert re.fullmatch(r"[\w.]+: .*", line), line  # key: value lines only, no JSON block
    assert "host_url: api.github.com, uploads.github.com" in human.out
    assert json.loads(authsome("inspect", "github", "--json").out)["provider"]["name"] == "github"


def test_a_missing_connection_is_worded_one_way(authsome: Runner) -> None:
    login_openai(authsome)
    errors = {authsome(*cmd, "openai", "--connection", "work").err for cmd in (("get",), ("export",), ("logout",))}
    assert errors == {
        "Error: no credential stored for openai/work\nHint: run `authsome login openai --connection work`\n"
    }


def test_a_bad_key_message_uses_the_right_article(authsome: Runner) -> None:
    res = authsome("login", "openai", env={"OPENAI_API_KEY": "not-an-openai-key"})
    assert res.code == 2
    assert "does not look like an API key for OpenAI" in res.err and "a OpenAI" not in res.err
