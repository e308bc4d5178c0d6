"""Homes written by the real authsome package (0.2.3 and 0.7.2) are imported: every secret reads back here, `run`
injects them, the import can run again harmlessly, and the authsome package still reads its own home afterwards.

The homes are made by the installed reference package itself (its CLI and library, in its own Python 3.13 venv),
without network: API keys through its own login with the key handed over as its input form would, OAuth connections
and clients written through its own store API as its login would, a custom provider through its own registration.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compat.reference import VERSIONS, authsome_cli, reference_python
from tests.e2e.proxy import conftest as proxy_fixtures
from tests.e2e.proxy.conftest import HOSTS, StandIn

# The proxy tests' loopback TLS stand-in (answers for HOSTS with a test CA; echoes what it received) and its CA.
test_ca = proxy_fixtures.test_ca
test_ca_file = proxy_fixtures.test_ca_file
tls_server = proxy_fixtures.tls_server

pytestmark = pytest.mark.e2e

AUTHSOME = str(Path(sys.executable).with_name("authsome"))
OPENAI_KEY = "sk-importdefault0123456789abcdef"
OPENAI_WORK_KEY = "sk-importwork0123456789abcdefghi"
GITHUB_ACCESS = "gho_importAccessToken0123456789"
GITHUB_REFRESH = "ghr_importRefreshToken0123456789"
GITHUB_EXPIRES = "2031-05-04T03:02:01+00:00"
CLIENT_ID = "Iv1.importclient"
CLIENT_SECRET = "import-client-secret-0123456789"
GITLAB_ACCESS = "glpat-importAccessToken0123456789"
GITLAB_BASE = "https://gitlab.example.test"
ACME_KEY = "acme-import-key-0123456789"

OAUTH = [
    {
        "provider": "github",
        "connection_name": "default",
        "access_token": GITHUB_ACCESS,
        "refresh_token": GITHUB_REFRESH,
        "expires_at": GITHUB_EXPIRES,
        "scopes": ["repo", "read:user"],
        "token_type": "Bearer",
        "account": {"id": "1", "label": "octo"},
    },
    {
        "provider": "gitlab",
        "connection_name": "default",
        "access_token": GITLAB_ACCESS,
        "base_url": GITLAB_BASE,
        "token_type": "Bearer",
    },
]
CLIENTS = [{"provider": "github", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}]

# authsome 0.2.3: its library, as its CLI wires it (AuthsomeContext); API keys through its own login.
MAKE_023 = """
import json, sys
from authsome.auth.models.connection import ConnectionRecord, ProviderClientRecord
from authsome.context import AuthsomeContext

spec = json.load(sys.stdin)  # (secrets never on argv, even test ones)

class Typed:  # what its browser input form hands back
    def __init__(self, values): self.values = values
    def collect(self, fields): return {f.name: self.values[f.name] for f in fields if f.name in self.values}

with AuthsomeContext.create() as ctx:
    ctx.auth.create_profile("work")
for profile, keys in spec["api_keys"].items():
    with AuthsomeContext.create(profile=profile) as ctx:
        for provider, key in keys.items():
            ctx.auth.login(provider, input_provider=Typed({"api_key": key}))
with AuthsomeContext.create() as ctx:
    for record in spec["oauth"]:
        ctx.auth._save_connection(ConnectionRecord(profile="default", auth_type="oauth2", status="connected", **record))
        ctx.auth._update_provider_metadata(record["provider"], record["connection_name"])
    for client in spec["clients"]:
        ctx.auth._save_provider_client_credentials(ProviderClientRecord(profile="default", **client))
"""
ACME_023 = {
    "name": "acme",
    "display_name": "Acme",
    "auth_type": "api_key",
    "flow": "api_key",
    "host_url": "www.example.org",
    "api_key": {"header_name": "X-Acme-Key", "header_prefix": ""},
    "export": {"env": {"api_key": "ACME_API_KEY"}},
}

# authsome 0.7.2: its daemon's store and vault, as its routes use them; two principals = two vaults.
MAKE_072 = """
import asyncio, json, os, sys
from pathlib import Path
from authsome.auth.models.connection import ConnectionRecord, ProviderClientRecord, ProviderMetadataRecord
from authsome.auth.models.provider import ProviderDefinition
from authsome.server.credential_repository import CredentialRepository
from authsome.server.dependencies import create_store, create_vault
from authsome.server.ownership import ensure_principal_default_vault
from authsome.utils import parse_jsonc

spec = json.load(sys.stdin)  # (secrets never on argv, even test ones)
home = Path(os.environ["AUTHSOME_HOME"])

async def main():
    store = await create_store(home)
    vault = await create_vault(home)
    await store.provider_definitions.save(ProviderDefinition.model_validate(parse_jsonc(spec["acme"])))
    for email, profile in (("me@example.org", "default"), ("work@example.org", "work")):
        principal = await store.principals.create_by_email(email)
        vault_id = await ensure_principal_default_vault(
            principal_id=principal.principal_id, vaults=store.vaults, bindings=store.principal_vault_bindings)
        repo = CredentialRepository(vault, identity=None, principal_id=principal.principal_id, vault_id=vault_id)
        records = [dict(provider=p, connection_name="default", auth_type="api_key", api_key=k)
                   for p, k in spec["api_keys"][profile].items()]
        records += [dict(r, auth_type="oauth2") for r in spec["oauth"]] if profile == "default" else []
        for record in records:
            await repo.save_connection(ConnectionRecord(status="connected", **record))
            provider = record["provider"]
            meta = await repo.get_provider_metadata(provider) or ProviderMetadataRecord(provider=provider)
            meta.connection_names.append(record["connection_name"])
            await repo.save_provider_metadata(meta)
        if profile == "default":
            for client in spec["clients"]:
                await repo.save_provider_client(ProviderClientRecord(**client))
    await store.close()

asyncio.run(main())
"""
ACME_072 = """// Acme: a custom provider in authsome 0.7's format
{
  "name": "acme",
  "display_name": "Acme",
  "auth_type": "api_key",
  "flow": "api_key",
  "api_url": "www.example.org",
  "api_key": {"header_name": "X-Acme-Key", "header_prefix": ""},
  "export": {"ACME_API_KEY": "API_TOKEN"}
}
"""
# What authsome 0.7.2 itself reads back from each vault (its repository API), after the import.
READ_072 = """
import asyncio, json, os
from pathlib import Path
from authsome.server.credential_repository import CredentialRepository
from authsome.server.dependencies import create_store, create_vault

async def main():
    home = Path(os.environ["AUTHSOME_HOME"])
    store = await create_store(home)
    vault = await create_vault(home)
    out = {}
    for vault_record in await store.vaults.list_all():
        repo = CredentialRepository(vault, identity=None, principal_id=None, vault_id=vault_record.vault_id)
        for key in await repo.list_connection_keys():
            record = await repo.get_connection(key.split(":")[2], key.rsplit(":", 1)[1])
            out.setdefault(vault_record.vault_id, {})[record.provider] = record.api_key or record.access_token
    await store.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class LegacyHome:
    version: str
    root: Path
    env: dict[str, str]

    def work_profile(self) -> str:
        """The profile name the work account gets here: authsome 0.7 has vaults, named by their id."""
        if self.version.startswith("0.2"):
            return "work"
        return next(p.name for p in (self.root / "profiles").iterdir() if p.name.startswith("vault_"))

    def authsome(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """This project's CLI on the home."""
        proc = subprocess.run(
            [AUTHSOME, *args], capture_output=True, text=True, timeout=120, env={**self.env, **(env or {})}
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def reference(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The authsome package's own CLI on the home."""
        cli = [str(authsome_cli(self.version)), *args]
        return subprocess.run(cli, capture_output=True, text=True, timeout=120, env=self.env, check=True)

    def reference_python(self, script: str, stdin: str = "") -> str:
        python = str(reference_python(self.version))
        proc = subprocess.run(
            [python, "-c", script], input=stdin, capture_output=True, text=True, timeout=120, env=self.env, check=False
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def _env(home: Path, tmp_path: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        HOME=str(tmp_path),  # the proxy CA and any user-level file land in the test's own directory
        AUTHSOME_HOME=str(home),
        AUTHSOME_KEY_SOURCE="file",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",  # neither tool may touch a real keyring
    )
    return env


def make_home(version: str, tmp_path: Path) -> LegacyHome:
    home = LegacyHome(version, tmp_path / f"home-{version}", {})
    home.env = _env(home.root, tmp_path)
    api_keys = {"default": {"openai": OPENAI_KEY, "acme": ACME_KEY}, "work": {"openai": OPENAI_WORK_KEY}}
    if version.startswith("0.2"):
        acme = tmp_path / "acme.json"
        acme.write_text(json.dumps(ACME_023))
        home.reference("register", str(acme))
        spec = {"api_keys": api_keys, "oauth": OAUTH, "clients": CLIENTS}
        home.reference_python(MAKE_023, stdin=json.dumps(spec))
    else:
        spec = {"api_keys": api_keys, "oauth": OAUTH, "clients": CLIENTS, "acme": ACME_072}
        home.reference_python(MAKE_072, stdin=json.dumps(spec))
    return home


@pytest.fixture(scope="module")
def templates() -> dict[str, LegacyHome]:
    """One home per version, made once by the reference package; each test works on its own copy."""
    return {}


@pytest.fixture(params=VERSIONS)
def legacy(
    request: pytest.FixtureRequest,
    templates: dict[str, LegacyHome],
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> LegacyHome:
    version = request.param
    if version not in templates:
        templates[version] = make_home(version, tmp_path_factory.mktemp(f"authsome-{version}"))
    home = LegacyHome(version, tmp_path / templates[version].root.name, {})
    shutil.copytree(templates[version].root, home.root, symlinks=True)  # modes and contents as the package left them
    home.env = _env(home.root, tmp_path)
    return home


def secret(home: LegacyHome, provider: str, field: str, *profile: str) -> str:
    res = home.authsome(*profile, "get", provider, "--field", field, "--show-secret")
    assert res.code == 0, res.err
    return res.out.strip()


def legacy_rows(home: LegacyHome) -> dict[str, object]:
    """The authsome package's own stored rows (their ciphertexts), to show they are left exactly as they were."""
    out: dict[str, object] = {}
    for db in sorted(home.root.rglob("*.db")):
        if "backups" in db.parts:
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            if table != "records":  # this project's own table, added beside theirs in a 0.2 store.db
                out[f"{db.relative_to(home.root)}:{table}"] = sorted(map(repr, conn.execute(f"SELECT * FROM {table}")))
        conn.close()
    return out


def test_every_secret_reads_back(legacy: LegacyHome) -> None:
    first = legacy.authsome("get", "openai", "--field", "api_key", "--show-secret")
    assert first.code == 0, first.err
    assert first.out.strip() == OPENAI_KEY
    backups = list((legacy.root / "backups").iterdir())
    assert len(backups) == 1 and str(backups[0]) in first.err  # the notice names the backup copy
    assert "authsome" in first.err and "Imported" in first.err
    assert secret(legacy, "openai", "api_key", "--profile", legacy.work_profile()) == OPENAI_WORK_KEY
    assert secret(legacy, "github", "access_token") == GITHUB_ACCESS
    assert secret(legacy, "gitlab", "access_token") == GITLAB_ACCESS
    github = json.loads(legacy.authsome("get", "github", "--json").out)
    assert github["has_refresh_token"] is True and github["scopes"] == ["repo", "read:user"]
    assert github["expires_at"] == datetime.datetime.fromisoformat(GITHUB_EXPIRES).timestamp()
    gitlab = json.loads(legacy.authsome("get", "gitlab", "--json").out)
    assert gitlab["metadata"]["base_url"] == GITLAB_BASE
    # what never leaves the store through the CLI: the refresh token, the OAuth client, the base URL's effect
    probe = """
import json
from authsome import Authsome
auth = Authsome()
cred, client = auth.store.load("github", "default"), auth.store.client("github")
gitlab = auth.connection_provider("gitlab", auth.get("gitlab").metadata)
print(json.dumps([cred.refresh_token.reveal(), client.client_id, client.client_secret.reveal()]))
print(gitlab.oauth.token_url)
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=legacy.env, check=True)
    secrets, token_url = proc.stdout.splitlines()
    assert json.loads(secrets) == [GITHUB_REFRESH, CLIENT_ID, CLIENT_SECRET]
    assert token_url == f"{GITLAB_BASE}/oauth/token"  # refreshes go to the self-hosted instance


def test_the_custom_provider_is_registered_with_its_key(legacy: LegacyHome) -> None:
    assert secret(legacy, "acme", "api_key") == ACME_KEY
    listed = json.loads(legacy.authsome("list", "--json").out)
    rows = listed["providers"] if isinstance(listed, dict) else listed
    acme = next(r for r in rows if r["name"] == "acme")
    assert acme["state"] == "connected" and acme["source"] == "user"


def test_run_injects_every_imported_credential(
    legacy: LegacyHome, tls_server: StandIn, test_ca_file: Path, tmp_path: Path
) -> None:
    tls_server.seen.clear()
    resolve = ",".join(f"{h}:443=127.0.0.1:{tls_server.port}" for h in HOSTS)
    urls = ["https://api.openai.com/v1/models", "https://api.github.com/user", "https://www.example.org/v1/things"]
    script = " && ".join(f"curl -sS --fail -o /dev/null {url}" for url in urls)
    res = legacy.authsome(
        "run", "--upstream-ca", str(test_ca_file), "--", "sh", "-c", script, env={"AUTHSOME_TEST_RESOLVE": resolve}
    )
    assert res.code == 0, res.err
    seen = {s.headers["host"]: s.headers for s in tls_server.seen}  # what arrived upstream, as the stand-in saw it
    assert seen["api.openai.com"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen["api.github.com"]["authorization"] == f"Bearer {GITHUB_ACCESS}"
    assert seen["www.example.org"]["x-acme-key"] == ACME_KEY  # authsome's empty header_prefix: the bare key

    tls_server.seen.clear()
    work = legacy.authsome(
        "--profile",
        legacy.work_profile(),
        "run",
        "--upstream-ca",
        str(test_ca_file),
        "--",
        "curl",
        "-sS",
        "--fail",
        "-o",
        "/dev/null",
        urls[0],
        env={"AUTHSOME_TEST_RESOLVE": resolve},
    )
    assert work.code == 0, work.err
    assert tls_server.seen[-1].headers["authorization"] == f"Bearer {OPENAI_WORK_KEY}"


def test_import_runs_once_again_harmlessly_and_the_package_keeps_its_home(legacy: LegacyHome) -> None:
    before = legacy_rows(legacy)
    assert legacy.authsome("list").code == 0
    assert legacy_rows(legacy) == before  # authsome's own stored rows: untouched
    layout = "0.2" if legacy.version.startswith("0.2") else "0.5"
    state = json.loads((legacy.root / "legacy-import.json").read_text())[layout]
    assert state["state"] == "done"

    # A change made here after the import is never overwritten by importing again (documented: delete the state).
    new_key = "sk-changedhere0123456789abcdefgh"
    login = legacy.authsome("login", "openai", "--force", env={"OPENAI_API_KEY": new_key})
    assert login.code == 0, login.err
    (legacy.root / "legacy-import.json").unlink()
    again = legacy.authsome("list")
    assert again.code == 0 and "kept (already here)" in again.err
    assert secret(legacy, "openai", "api_key") == new_key
    assert secret(legacy, "github", "access_token") == GITHUB_ACCESS
    assert len(list((legacy.root / "backups").iterdir())) == 2  # a new run, a new copy; nothing overwritten

    # A run that stopped halfway (state "started") is finished by the next command, with the same backup.
    state = json.loads((legacy.root / "legacy-import.json").read_text())[layout]
    (legacy.root / "legacy-import.json").write_text(json.dumps({layout: {**state, "state": "started"}}))
    assert legacy.authsome("list").code == 0
    finished = json.loads((legacy.root / "legacy-import.json").read_text())[layout]
    assert finished["state"] == "done" and finished["backup"] == state["backup"]
    assert len(list((legacy.root / "backups").iterdir())) == 2

    assert legacy_rows(legacy) == before
    if legacy.version.startswith("0.2"):
        got = legacy.reference("get", "openai", "--field", "api_key", "--show-secret").stdout.strip()
        assert got == OPENAI_KEY
    else:
        by_vault = json.loads(legacy.reference_python(READ_072))
        assert sorted(v["openai"] for v in by_vault.values()) == sorted([OPENAI_KEY, OPENAI_WORK_KEY])
        assert GITHUB_ACCESS in {v.get("github") for v in by_vault.values()}


def test_doctor_describes_the_home_and_imports_nothing(legacy: LegacyHome) -> None:
    listing = _files(legacy.root)
    res = legacy.authsome("doctor", "--json")
    assert res.code == 0, res.out  # authsome's open file modes are the import's to fix, not a failure
    check = next(c for c in json.loads(res.out)["checks"] if c["check"] == "authsome package home")
    assert check["ok"] is True
    assert "imports it in place" in check["detail"] and "acme" in check["detail"]
    assert "default (4 connections, 1 OAuth client)" in check["detail"]
    assert not (legacy.root / "legacy-import.json").exists()
    assert _files(legacy.root) == listing  # nothing created: no backup, no key, no store of this project


def _files(root: Path) -> list[Path]:
    """Every path under ``root`` but SQLite's side files (a read-only reader of a WAL database may add them)."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if not p.name.endswith(("-wal", "-shm")))


def test_a_missing_master_key_is_reported_and_does_not_block(legacy: LegacyHome) -> None:
    key = legacy.root / ("master.key" if legacy.version.startswith("0.2") else "server/master.key")
    moved = key.with_name("master.key.away")
    key.rename(moved)
    res = legacy.authsome("list")
    assert res.code == 0 and "Could not import" in res.err and "master" in res.err
    doctor = json.loads(legacy.authsome("doctor", "--json").out)
    check = next(c for c in doctor["checks"] if c["check"] == "authsome package home")
    assert check["ok"] is False and check["hint"]
    moved.rename(key)
    assert secret(legacy, "openai", "api_key") == OPENAI_KEY  # the next command imports it
