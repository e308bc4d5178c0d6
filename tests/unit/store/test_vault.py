from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from authsome.errors import CredentialMissing, StoreUnavailable
from authsome.models import Credential
from authsome.paths import Home
from authsome.secret import Secret
from authsome.store import keysource
from authsome.store.credentials import CredentialStore
from authsome.store.vault import Vault

SECRET = "sk-test-0123456789abcdefSECRET"


def make_store(root: Path, profile: str = "default") -> CredentialStore:
    home = Home.resolve(root)
    vault = Vault(home.profile_dir(profile), profile, lambda: keysource.select(home, {"AUTHSOME_KEY_SOURCE": "file"}))
    return CredentialStore(vault)


def all_files(root: Path) -> list[Path]:
    return [Path(d, f) for d, _, files in os.walk(root) for f in files]


def test_save_load_and_modes(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    store.save("openai", "default", Credential(kind="api_key", api_key=Secret(SECRET)))
    assert store.load("openai", "default").api_key == Secret(SECRET)
    for d, dirs, _ in os.walk(tmp_path / "home"):
        for name in [d, *[os.path.join(d, x) for x in dirs]]:
            assert stat.S_IMODE(os.stat(name).st_mode) == 0o700, name
    for f in all_files(tmp_path / "home"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_no_plaintext_secret_anywhere_under_home(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    store.save("openai", "default", Credential(kind="api_key", api_key=Secret(SECRET)))
    store.save(
        "github",
        "work",
        Credential(
            kind="oauth2", access_token=Secret("gho_ACCESS_" + SECRET), refresh_token=Secret("ghr_REFRESH_" + SECRET)
        ),
    )
    for f in all_files(tmp_path / "home"):
        data = f.read_bytes()
        assert SECRET.encode() not in data, f


def test_failed_transaction_leaves_store_bytes_unchanged(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    store.save("openai", "default", Credential(kind="api_key", api_key=Secret(SECRET)))
    before = store.vault.path.read_bytes()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.vault.transaction():
        store.save("anthropic", "default", Credential(kind="api_key", api_key=Secret("other")))
        store.delete("openai", "default")
        raise Boom
    assert store.vault.path.read_bytes() == before
    assert store.load("openai", "default").api_key == Secret(SECRET)
    assert store.info("anthropic", "default") is None


def test_swapped_ciphertext_between_records_is_detected(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    store.save("openai", "default", Credential(kind="api_key", api_key=Secret("A" * 20)))
    store.save("anthropic", "default", Credential(kind="api_key", api_key=Secret("B" * 20)))
    db = sqlite3.connect(store.vault.path)
    a = db.execute("SELECT value FROM records WHERE key='connection/openai/default'").fetchone()[0]
    db.execute("UPDATE records SET value=? WHERE key='connection/anthropic/default'", (a,))
    db.commit()
    db.close()
    with pytest.raises(StoreUnavailable, match="anthropic/default"):
        store.load("anthropic", "default")
    assert store.load("openai", "default").api_key == Secret("A" * 20)


def test_corrupt_record_does_not_hide_the_others(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    store.save("openai", "default", Credential(kind="api_key", api_key=Secret(SECRET)))
    store.save("anthropic", "default", Credential(kind="api_key", api_key=Secret(SECRET)))
    db = sqlite3.connect(store.vault.path)
    db.execute("UPDATE records SET value='{not json' WHERE key='connection/openai/default'")
    db.commit()
    db.close()
    infos = {(i.provider, i.name): i for i in store.connections()}
    assert infos[("openai", "default")].status == "invalid" and infos[("openai", "default")].error
    assert infos[("anthropic", "default")].status == "connected"
    with pytest.raises(StoreUnavailable, match="openai/default"):
        store.load("openai", "default")


def test_missing_connection_says_how_to_fix(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    with pytest.raises(CredentialMissing, match="no credential stored for github/work") as err:
        store.load("github", "work")
    assert "authsome login github --connection work" in (err.value.hint or "")


def test_profiles_are_isolated(tmp_path: Path) -> None:
    default = make_store(tmp_path / "home", "default")
    work = make_store(tmp_path / "home", "work")
    default.save("openai", "default", Credential(kind="api_key", api_key=Secret(SECRET)))
    assert work.info("openai", "default") is None


def test_record_copied_to_another_profile_fails(tmp_path: Path) -> None:
    default = make_store(tmp_path / "home", "default")
    work = make_store(tmp_path / "home", "work")
    default.save("openai", "default", Credential(kind="api_key", api_key=Secret(SECRET)))
    work.save("openai", "default", Credential(kind="api_key", api_key=Secret("x" * 10)))
    src = sqlite3.connect(default.vault.path).execute("SELECT value FROM records").fetchone()[0]
    db = sqlite3.connect(work.vault.path)
    db.execute("UPDATE records SET value=?", (src,))
    db.commit()
    db.close()
    with pytest.raises(StoreUnavailable, match="integrity"):
        work.load("openai", "default")


def test_client_secret_encrypted_and_status_update_keeps_secrets(tmp_path: Path) -> None:
    from authsome.models import ClientConfig

    store = make_store(tmp_path / "home")
    store.save_client("github", ClientConfig(client_id="cid", client_secret=Secret("client-" + SECRET)))
    store.save("github", "default", Credential(kind="oauth2", access_token=Secret(SECRET), expires_at=1.0))
    store.set_status("github", "default", "invalid", "refresh token rejected")
    assert store.client("github").client_secret == Secret("client-" + SECRET)  # type: ignore[union-attr]
    info = store.info("github", "default")
    assert info is not None and info.status == "invalid" and info.error == "refresh token rejected"
    assert store.load("github", "default").access_token == Secret(SECRET)
    assert SECRET.encode() not in store.vault.path.read_bytes()


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home")
    store.vault.path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnavailable, match="unreadable"):
        store.connections()
