"""One output shape per mode: --json gives JSON on stdout (errors too, once), otherwise `Error:`/`Hint:` on stderr."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import Runner

KEY = "sk-proj-TESTKEY0123456789abcdefghij"


def test_global_json_flag_makes_export_print_json(authsome: Runner) -> None:
    assert authsome("login", "openai", env={"OPENAI_API_KEY": KEY}).code == 0
    for args in (("--json", "export", "openai"), ("export", "openai", "--json")):
        res = authsome(*args)
        assert res.code == 0, res.err
        assert json.loads(res.out) == {"OPENAI_API_KEY": KEY}
    clash = authsome("--json", "export", "openai", "--format", "shell")
    assert clash.code == 2 and clash.err == "" and KEY not in clash.out
    assert json.loads(clash.out)["message"] == "--json and --format shell ask for two formats"


@pytest.mark.parametrize(
    "args",
    [
        ("get", "openai", "--json"),  # an AuthsomeError (exit 5)
        ("--json", "export", "openai", "--format", "yaml"),  # a bad option value, --json before the command
        ("export", "openai", "--format", "yaml", "--json"),  # ... and after the bad value
        ("frobnicate", "--json"),  # no such command
        ("--json", "get"),  # a missing argument
        ("get", "openai", "--bogus", "--json"),  # no such option
    ],
)
def test_json_mode_prints_an_error_once_as_json_on_stdout(authsome: Runner, args: tuple[str, ...]) -> None:
    res = authsome(*args)
    assert res.code in (2, 5)
    assert res.err == ""
    error = json.loads(res.out)
    assert set(error) == {"error", "message", "hint", "exit_code"} and error["exit_code"] == res.code
    assert "\n" not in error["message"] and error["hint"]


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ("export", "openai", "--format", "yaml"),
            "Error: invalid value for '--format': 'yaml' is not one of 'env', 'shell', 'json'",
            "Hint: run `authsome export --help`",
        ),
        (("frobnicate",), "Error: no such command 'frobnicate'", "Hint: run `authsome --help`"),
        (("get",), "Error: missing argument 'PROVIDER'", "Hint: run `authsome get --help`"),
    ],
)
def test_usage_errors_are_one_line_and_a_hint(authsome: Runner, args: tuple[str, ...], message: str, hint: str) -> None:
    res = authsome(*args)
    assert res.code == 2 and res.out == ""
    assert res.err.splitlines() == [message, hint]


def test_flags_after_run_belong_to_the_child(authsome: Runner) -> None:
    """`-v` and `--json` meant for the child neither turn on authsome's tracebacks nor switch its errors to JSON."""
    res = authsome("run", "--provider", "openai", "--", "tool", "-v", "--json")
    assert res.code == 5 and res.out == ""
    assert "Traceback" not in res.err
    assert res.err.splitlines() == [
        "Error: no credential stored for openai/default",
        "Hint: run `authsome login openai`",
    ]
    own = authsome("-v", "run", "--provider", "openai", "--", "tool")  # authsome's own -v still works
    assert own.code == 5 and "Traceback" in own.err


def test_bare_authsome_still_shows_the_help(authsome: Runner) -> None:
    res = authsome()
    assert res.code == 2 and "Commands:" in res.out + res.err
