"""Reading and importing homes of the authsome package, on homes written here in its formats (the compat tests use
the real package): detection, record mapping, what is skipped and why, failures that do not block, re-runs."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from authsome import Authsome
from authsome.errors import StoreUnavailable
from authsome.paths import Home
from authsome.secret import Secret
from authsome.store import keysource, legacy
from authsome.store.legacy import records

KEY = os.urandom(32)
ENV = {"AUTHSOME_KEY_SOURCE": "file"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- a 0.2.x home --------------------------------------------------------------------------------------------------
def seal_02(key: bytes, record: dict[str, Any]) -> str:
    nonce = os.urandom(12)
    return b64(nonce) + "." + b64(AESGCM(key).encrypt(nonce, json.dumps(record).encode(), None))


def api_key_record(provider: str, key: str, connection: str = "default", **extra: Any) -> dict[str, Any]:
    base = {"schema_version": 2, "provider": provider, "connection_name": connection, "auth_type": "api_key"}
    return {**base, "status": "connected", "api_key": key, **extra}


def home_02(root: Path, profiles: dict[str, dict[str, dict[str, Any]]], key: bytes = KEY) -> Path:
    root.mkdir()
    (root / "master.key").write_text(json.dumps({"version": 1, "key": b64(KEY)}))
    (root / "config.json").write_text(json.dumps({"spec_version": 1, "encryption": {"mode": "local_key"}}))
    (root / "version").write_text("2\n")
    (root / "providers").mkdir()
    for profile, rows in profiles.items():
        directory = root / "profiles" / profile
        directory.mkdir(parents=True)
        (directory / "metadata.json").write_text(json.dumps({"name": profile}))
        db = sqlite3.connect(directory / "store.db")
        db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executemany("INSERT INTO kv VALUES (?, ?)", [(k, seal_02(key, v)) for k, v in rows.items()])
        db.commit()
        db.close()
    return root


# -- a 0.5-0.7.x home ----------------------------------------------------------------------------------------------
def home_05(root: Path, secret: str, vaults: dict[str, list[dict[str, Any]]], owners: list[tuple[str, str]]) -> Path:
    """``vaults``: vault id -> connection records; ``owners``: (vault id, email), first = the admin."""
    server = root / "server"
    (server / "kv_store").mkdir(parents=True)
    (server / "master.key").write_text(secret)
    salt, nonce, dek = os.urandom(16), os.urandom(12), os.urandom(32)
    kek = Argon2id(salt=salt, length=32, iterations=1, lanes=1, memory_cost=8).derive(secret.encode())
    dek_record = {
        "kdf": {"alg": "argon2id", "salt": b64(salt), "memory_cost": 8, "time_cost": 1, "parallelism": 1},
        "wrapped_dek": {
            "alg": "AES-256-GCM",
            "nonce": b64(nonce),
            "ciphertext": b64(AESGCM(kek).encrypt(nonce, dek, None)),
        },
    }
    rows = [("__vault_meta__::__dek__", _entry("__vault_meta__", "__dek__", dek_record))]
    for vault_id, conns in vaults.items():
        for record in conns:
            key = f"vault:{vault_id}:{record['provider']}:connection:{record['connection_name']}"
            rows.append((f"vault:{vault_id}::{key}", _entry(f"vault:{vault_id}", key, _seal_05(dek, record))))
    cache = sqlite3.connect(server / "kv_store" / "cache.db")
    cache.execute(
        "CREATE TABLE Cache (rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER, mode INTEGER, filename TEXT, value BLOB)"
    )
    cache.executemany("INSERT INTO Cache (key, raw, mode, filename, value) VALUES (?, 1, 1, NULL, ?)", rows)
    cache.commit()
    cache.close()
    db = sqlite3.connect(server / "authsome.db")
    db.execute("CREATE TABLE principals (principal_id TEXT, email TEXT, created_at TEXT)")
    db.execute("CREATE TABLE principal_vault_bindings (principal_id TEXT, vault_id TEXT, is_default INTEGER)")
    db.execute("CREATE TABLE custom_provider_definitions (name TEXT, definition_json TEXT)")
    for rank, (vault_id, email) in enumerate(owners):
        db.execute("INSERT INTO principals VALUES (?, ?, ?)", (f"p{rank}", email, f"2026-01-0{rank + 1}"))
        db.execute("INSERT INTO principal_vault_bindings VALUES (?, ?, 1)", (f"p{rank}", vault_id))
    db.commit()
    db.close()
    return root


def _seal_05(dek: bytes, record: dict[str, Any]) -> dict[str, Any]:
    nonce = os.urandom(12)
    inner = json.dumps({"data": json.dumps(record)}).encode()
    return {"__encrypted_data__": b64(nonce + AESGCM(dek).encrypt(nonce, inner, None)), "__encryption_version__": 1}


def _entry(collection: str, key: str, value: dict[str, Any]) -> str:
    return json.dumps({"collection": collection, "key": key, "value": value, "version": 1})


# -- tests ---------------------------------------------------------------------------------------------------------
def test_detection_is_by_layout_and_leaves_this_projects_own_home_alone(tmp_path: Path) -> None:
    ours = Authsome(home=tmp_path / "ours", env=ENV)
    ours.store.connections()
    assert legacy.detect(ours.home.root) == []
    assert legacy.detect(home_02(tmp_path / "old", {})) == [legacy.LegacyHome(tmp_path / "old", "0.2")]
    newer = home_05(tmp_path / "new", "secret", {}, [])
    assert legacy.detect(newer) == [legacy.LegacyHome(newer, "0.5")]


def test_a_home_shared_with_authsome_02_reads_its_json_key_file(tmp_path: Path) -> None:
    root = home_02(tmp_path / "h", {})
    assert keysource.FileKeySource(Home.resolve(root)).load() == KEY  # one key file both tools read


def test_02_records_map_to_connections_and_what_cannot_be_used_is_named(tmp_path: Path) -> None:
    rows = {
        "profile:default:openai:connection:default": api_key_record("openai", "sk-one"),
        "profile:default:openai:metadata": {"provider": "openai"},
        "profile:default:github:connection:default": {
            **api_key_record("github", ""),
            "auth_type": "oauth2",
            "status": "revoked",
            "access_token": "gho_x",
            "expires_at": "2030-01-01T00:00:00",  # naive: UTC
        },
        "profile:default:linear:connection:default": {**api_key_record("linear", ""), "status": "not_connected"},
        "profile:default:cookies:connection:default": {**api_key_record("cookies", "k"), "credentials": {"sid": "s"}},
        "profile:default:Bad.Name:connection:default": api_key_record("Bad.Name", "k"),
        "profile:default:github:client": {"provider": "github", "client_id": "cid", "base_url": "https://ghe.test"},
    }
    data = legacy.read(legacy.LegacyHome(home_02(tmp_path / "h", {"default": rows}), "0.2"), {})
    (profile,) = data.profiles
    conns = {c.provider: c for c in profile.connections}
    assert conns["openai"].credential.api_key is not None and conns["openai"].credential.api_key.reveal() == "sk-one"
    github = conns["github"]
    assert github.status == "invalid" and github.note is not None and "revoked" in github.note
    assert github.credential.expires_at == 1893456000.0
    assert github.credential.metadata["base_url"] == "https://ghe.test"  # from the client record, as authsome did
    assert profile.clients["github"].client_id == "cid"
    reasons = " | ".join(data.skipped)
    assert "never connected" in reasons and "cookie" in reasons and "'Bad.Name' is not allowed" in reasons
    assert "sk-one" not in reasons


def test_a_wrong_02_master_key_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    root = home_02(
        tmp_path / "h",
        {"default": {"profile:default:openai:connection:default": api_key_record("openai", "k")}},
        key=os.urandom(32),
    )
    with pytest.raises(StoreUnavailable, match="does not open") as caught:
        legacy.read(legacy.LegacyHome(root, "0.2"), {})
    assert caught.value.hint and "master key" in caught.value.hint


def test_05_vaults_become_profiles_the_admins_is_default(tmp_path: Path) -> None:
    vaults = {"vault_aaa": [api_key_record("openai", "sk-admin")], "vault_bbb": [api_key_record("openai", "sk-other")]}
    root = home_05(tmp_path / "h", "s3cret", vaults, [("vault_bbb", "admin@x.test"), ("vault_aaa", "user@x.test")])
    data = legacy.read(legacy.LegacyHome(root, "0.5"), {})
    keys = {p.name: p.connections[0].credential.api_key for p in data.profiles}
    assert {name: key.reveal() for name, key in keys.items() if key} == {"default": "sk-other", "vault_aaa": "sk-admin"}
    assert any("admin@x.test" in p.origin for p in data.profiles)


def test_05_master_secret_from_the_environment_and_a_missing_one(tmp_path: Path) -> None:
    root = home_05(tmp_path / "h", "from-env", {"vault_a": [api_key_record("openai", "sk-a")]}, [("vault_a", "a@x")])
    (root / "server" / "master.key").unlink()
    found = legacy.LegacyHome(root, "0.5")
    assert legacy.read(found, {"AUTHSOME_MASTER_KEY": "from-env"}).profiles[0].connections
    with pytest.raises(StoreUnavailable, match="master secret"):
        legacy.read(found, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})


def test_a_03_store_is_named_not_misread(tmp_path: Path) -> None:
    root = tmp_path / "h"
    (root / "server" / "kv_store").mkdir(parents=True)
    cache = sqlite3.connect(root / "server" / "kv_store" / "cache.db")
    cache.execute("CREATE TABLE Cache (key BLOB, raw INTEGER, mode INTEGER, filename TEXT, value BLOB)")
    cache.execute("INSERT INTO Cache VALUES ('vault:v::vault:v:openai:connection:default', 1, 1, NULL, '{}')")
    cache.commit()
    cache.close()
    with pytest.raises(StoreUnavailable, match=r"0\.3 or 0\.4"):
        legacy.read(legacy.LegacyHome(root, "0.5"), {})


def test_the_import_runs_once_keeps_what_is_here_and_a_failure_does_not_block(tmp_path: Path) -> None:
    rows = {
        "profile:default:openai:connection:default": api_key_record("openai", "sk-old"),
        "profile:default:anthropic:connection:default": api_key_record("anthropic", "sk-ant-old"),
    }
    root = home_02(tmp_path / "h", {"default": rows})
    key_file = root / "master.key"
    saved = key_file.read_bytes()
    key_file.unlink()
    failed = Authsome(home=root, env=ENV)
    failed.store.connections()  # the command goes on
    assert len(failed.import_reports) == 1 and failed.import_reports[0].error is not None
    assert not (root / "backups").exists() and legacy.read_state(failed.home, "0.2") is None
    key_file.write_bytes(saved)

    auth = Authsome(home=root, env=ENV)
    assert {c.provider for c in auth.store.connections()} == {"openai", "anthropic"}
    (report,) = auth.import_reports
    assert report.error is None and report.connections == {"default": 2}
    assert report.backup is not None and (report.backup / "profiles" / "default" / "store.db").is_file()
    assert Authsome(home=root, env=ENV).import_authsome_home() == []  # done: not again

    (root / "legacy-import.json").unlink()  # the documented way to import again
    auth.store.delete("anthropic")
    again = Authsome(home=root, env=ENV)
    again.store.connections()
    (report,) = again.import_reports
    assert report.connections == {"default": 1} and report.kept == ["default: openai/default"]
    assert again.store.load("anthropic", "default").api_key is not None


def test_record_dates_and_token_only_refresh(tmp_path: Path) -> None:
    record = {**api_key_record("github", ""), "auth_type": "oauth2", "refresh_token": "r", "access_token": None}
    profile, skipped = records.build_profile("default", "here", [record], {}, "authsome 0.2.x")
    assert not skipped
    assert profile.connections[0].credential.expires_at == 0.0  # refreshed before its first use


def test_a_home_upgraded_from_02_to_07_brings_both_the_newer_winning(tmp_path: Path) -> None:
    old = {
        "profile:default:openai:connection:default": api_key_record("openai", "sk-from-0.2"),
        "profile:default:anthropic:connection:default": api_key_record("anthropic", "sk-ant-from-0.2"),
    }
    root = home_02(tmp_path / "h", {"default": old})
    home_05(root, "s", {"vault_a": [api_key_record("openai", "sk-from-0.7")]}, [("vault_a", "me@x.test")])
    auth = Authsome(home=root, env=ENV)
    assert [r.home.layout for r in auth.import_authsome_home()] == ["0.5", "0.2"]
    assert [r.kept for r in auth.import_reports] == [[], ["default: openai/default"]]
    assert auth.store.load("openai", "default").api_key == Secret("sk-from-0.7")
    assert auth.store.load("anthropic", "default").api_key == Secret("sk-ant-from-0.2")
    state = json.loads((root / "legacy-import.json").read_text())
    assert {layout: s["state"] for layout, s in state.items()} == {"0.2": "done", "0.5": "done"}


def test_an_empty_02_home_gets_a_key_file_both_tools_read(tmp_path: Path) -> None:
    root = home_02(tmp_path / "h", {"default": {}})
    (root / "master.key").unlink()  # authsome 0.2 makes it at its first write: never happened here
    auth = Authsome(home=root, env=ENV)
    auth.store.connections()
    doc = json.loads((root / "master.key").read_text())
    assert len(base64.b64decode(doc["key"])) == 32  # authsome's format: {"key": base64}
    assert keysource.FileKeySource(auth.home).load() == base64.b64decode(doc["key"])
