"""authsome's own provider files work here unchanged, with authsome's meaning (issue 9).

Every provider file bundled by the installed authsome packages (``tests/compat/reference.py``: 0.2.3 ``.json`` and
0.7.2 ``.jsonc``) is registered here as it is. Each API-key one is then logged in to from each variable its
``export`` names, and the header the proxy injects and the variables ``authsome export`` prints are compared with
what authsome's own code produces for the same file and key: :data:`REFERENCE` runs in that version's interpreter,
loads the file with the package's own loader and calls its header and export methods on a connection record.
Refresh-token variables are the one intended difference: they are never exported here.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authsome import Authsome
from authsome.api import LoginOptions
from authsome.errors import UsageError
from authsome.flows.ui import PlainUI
from authsome.providers.registry import strip_comments
from tests.compat.reference import VERSIONS, package_dir, reference_python

AUTHSOME = str(Path(sys.executable).with_name("authsome"))

# What authsome itself injects and exports for each file of a directory, given {provider: secret}.
REFERENCE = r"""
import asyncio, json, sys
from pathlib import Path

files_dir, secrets = Path(sys.argv[1]), json.loads(sys.argv[2])
try:
    from authsome.server.credential_service import CredentialService as Service  # 0.7.x
    from authsome.utils import parse_jsonc as load
except ImportError:  # 0.2.x
    from authsome.auth import AuthLayer as Service
    load = json.loads
from authsome.auth.models.connection import ConnectionRecord
from authsome.auth.models.provider import ProviderDefinition


async def _wrap(value):
    return value


def run(value):
    return asyncio.run(value) if asyncio.iscoroutine(value) else value


out = {}
for path in sorted(files_dir.glob("*.json*")):
    definition = ProviderDefinition.model_validate(load(path.read_text()))
    entry = out[path.name] = {"name": definition.name, "auth_type": str(definition.auth_type)}
    if definition.auth_type not in ("api_key", "oauth2"):
        continue
    secret = entry["secret"] = secrets.get(definition.name, "secret-token")
    fields = {"api_key": secret} if definition.auth_type == "api_key" else {"access_token": secret,
                                                                          "refresh_token": "refresh-" + secret}
    profile = {"profile": "default"} if "profile" in ConnectionRecord.model_fields else {}
    record = ConnectionRecord(provider=definition.name, connection_name="default", auth_type=definition.auth_type,
                              status="connected", **profile, **fields)
    service = Service.__new__(Service)
    wrap = _wrap if asyncio.iscoroutinefunction(Service.get_provider) else (lambda value: value)
    service.get_provider = lambda name, d=definition: wrap(d)
    service.get_connection = lambda name, connection="default", r=record: wrap(r)
    service._credentials = None
    exported = run(service._export_connection_values(definition.name, "default"))
    export = definition.export
    entry.update(
        headers=run(service.get_auth_headers(definition.name)),
        export=sorted(name for name, value in exported.items() if value == secret),
        refresh_export=sorted(name for name, value in exported.items() if value != secret),
        named=[var for key, var in (export.env.items() if export else ()) if key == "api_key"]
        + [var for var, src in ((export.model_extra or {}).items() if export else ()) if src.upper() == "API_TOKEN"],
    )
print(json.dumps(out))
"""

_PREFIXES = ("", "sk-", "sk-ant-", "ghp_", "sk_test_", "gsk_", "lin_api_", "pplx-", "sk-or-v1-", "xoxb-")
_BODY = "Tk3nA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def sample_key(pattern: str | None) -> str:
    """A key that fits a provider's ``key_pattern`` (both authsome and this project check it at login)."""
    for prefix in _PREFIXES:
        if pattern is None or re.fullmatch(pattern, prefix + _BODY):
            return prefix + _BODY
    raise AssertionError(f"no sample key fits {pattern!r}: add its prefix to _PREFIXES")


@functools.cache
def provider_dir(version: str) -> Path:
    return package_dir(version) / "auth" / "bundled_providers"


@functools.cache
def reference(version: str) -> dict[str, dict[str, Any]]:
    """File name -> what authsome ``version`` does with it (name, auth_type, headers, export, named variables)."""
    files = sorted(provider_dir(version).glob("*.json*"))
    patterns = {}
    for path in files:
        data = json.loads(strip_comments(path.read_text()))
        patterns[data["name"]] = (data.get("api_key") or {}).get("key_pattern")
    secrets = {name: sample_key(pattern) for name, pattern in patterns.items()}
    proc = subprocess.run(
        [str(reference_python(version)), "-c", REFERENCE, str(provider_dir(version)), json.dumps(secrets)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    assert len(result) == len(files) >= 40
    return result


def usable(version: str) -> dict[str, dict[str, Any]]:
    return {f: r for f, r in reference(version).items() if r["auth_type"] in ("api_key", "oauth2")}


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def login_from(var: str, key: str, name: str, home: Path) -> Authsome:
    """Log in to ``name`` with the key in environment variable ``var`` only (no stdin, no terminal)."""
    auth = Authsome(home, env={"AUTHSOME_KEY_SOURCE": "file", var: key})
    auth.login(name, LoginOptions(force=True, no_browser=True), ui=PlainUI(io.StringIO()), stdin=io.StringIO(""))
    return auth


def test_every_provider_file_registers_unchanged(version: str, authsome_home: Path) -> None:
    auth = Authsome(authsome_home)
    for file_name, ref in reference(version).items():
        path = provider_dir(version) / file_name
        before = path.read_bytes()
        if ref["auth_type"] == "browser":
            with pytest.raises(UsageError, match=r"'browser' .* is not supported") as info:
                auth.register(path)
            assert "cookie" in (info.value.hint or "")
            continue
        prov = auth.register(path, force=True)
        assert path.read_bytes() == before
        assert (prov.name, prov.source, prov.auth_type) == (ref["name"], "user", ref["auth_type"])
    names = {r["name"] for r in usable(version).values()}
    assert {p.name for p in Authsome(authsome_home).registry.all() if p.source == "user"} == names
    assert Authsome(authsome_home).registry.problems() == []


def test_api_key_login_from_each_export_variable_matches_authsome(version: str, authsome_home: Path) -> None:
    mismatches = []
    checked = 0
    for file_name, ref in usable(version).items():
        if ref["auth_type"] != "api_key":
            continue
        name = ref["name"]
        Authsome(authsome_home).register(provider_dir(version) / file_name, force=True)
        key = ref["secret"]
        assert ref["named"], f"{file_name} names no export variable"
        for var in ref["named"]:
            auth = login_from(var, key, name, authsome_home)
            got = (auth.headers_for(name), sorted(json.loads(auth.export(name, fmt="json"))))
            want = (ref["headers"], ref["export"])
            if got != want:
                mismatches.append(f"{file_name} via ${var}: got {got}, authsome {want}")
            checked += 1
    assert mismatches == []
    assert checked >= 30


def test_oauth_files_inject_and_export_like_authsome_except_refresh_tokens(version: str, authsome_home: Path) -> None:
    auth = Authsome(authsome_home)
    mismatches = []
    for file_name, ref in usable(version).items():
        if ref["auth_type"] != "oauth2":
            continue
        prov = auth.register(provider_dir(version) / file_name, force=True)
        header = dict([prov.header(ref["secret"])])
        exported = sorted(v for v, kind in prov.export_env.items() if kind == "access_token")
        if (header, exported) != (ref["headers"], ref["export"]):
            mismatches.append(f"{file_name}: got {(header, exported)}, authsome {(ref['headers'], ref['export'])}")
        assert not set(prov.export_env) & set(ref["refresh_export"])
    assert mismatches == []


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHSOME, *args], capture_output=True, text=True, input="", env={**os.environ, **(env or {})}, timeout=60
    )


def test_register_says_once_that_a_refresh_token_is_not_exported() -> None:
    path = provider_dir("0.2.3") / "github.json"
    first = cli("register", str(path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("GITHUB_REFRESH_TOKEN") == 1
    assert "refresh tokens are never exported" in first.stdout
    shown = cli("inspect", "github")
    assert shown.returncode == 0 and "refresh tokens are never exported" not in shown.stdout + shown.stderr


def test_a_broad_regex_is_narrowed_and_inspect_shows_the_routes_in_use() -> None:
    registered = cli("register", str(provider_dir("0.7.2") / "github.jsonc"))
    assert registered.returncode == 0, registered.stderr
    assert r"is used as 'regex:([a-z0-9-]+\.)*githubusercontent\.com'" in registered.stdout
    routes = json.loads(cli("inspect", "github", "--json").stdout)["routes"]
    assert routes == ["api.github.com", r"regex:([a-z0-9-]+\.)*githubusercontent\.com"]
    assert "routes: api.github.com, regex:([a-z0-9-]+" in cli("inspect", "github").stdout


def test_jsonc_file_on_the_command_line_end_to_end() -> None:
    """0.7.x github-mcp: register the .jsonc, log in from GH_TOKEN, export authsome's three variables."""
    key = "ghp_" + _BODY
    assert cli("register", str(provider_dir("0.7.2") / "github-mcp.jsonc")).returncode == 0
    login = cli("login", "github-mcp", env={"GH_TOKEN": key})
    assert login.returncode == 0, login.stderr
    exported = cli("export", "github-mcp", "--format", "json")
    assert json.loads(exported.stdout) == dict.fromkeys(["GH_TOKEN", "GITHUB_MCP_API_KEY", "GITHUB_TOKEN"], key)


def test_key_pattern_hint_is_shown_for_a_key_that_does_not_fit() -> None:
    assert cli("register", str(provider_dir("0.7.2") / "openai.jsonc")).returncode == 0
    login = cli("login", "openai", env={"OPENAI_API_KEY": "not-an-openai-key"})
    assert login.returncode == 2
    assert "Hint: OpenAI API keys start with 'sk-'" in login.stderr
    assert "not-an-openai-key" not in login.stderr


def test_authsome_list_is_a_superset_of_every_bundled_provider() -> None:
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {row["name"] for row in json.loads(listed.stdout)["providers"]}
    for version in VERSIONS:
        bundled = {r["name"] for r in usable(version).values()}
        assert bundled - names == set(), f"authsome {version} bundles providers missing here"
    browser = {r["name"] for v in VERSIONS for r in reference(v).values() if r["auth_type"] == "browser"}
    assert browser == {"linkedin-browser", "x-browser"} and not browser & names
