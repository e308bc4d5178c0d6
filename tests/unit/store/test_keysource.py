from __future__ import annotations

import stat
from pathlib import Path

import pytest

from authsome.errors import StoreUnavailable
from authsome.paths import Home
from authsome.store import keysource


def test_file_source_creates_a_private_key_once(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h")
    source = keysource.select(home, {"AUTHSOME_KEY_SOURCE": "file"})
    key = source.load()
    path = home.root / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keysource.select(home, {}).load() == key
    assert home.read_config()["key_source"] == "file"


def test_choice_is_recorded_and_not_reprobed(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h")
    assert keysource.select(home, {"AUTHSOME_KEY_SOURCE": "file"}).name == "file"
    # a later passphrase in the environment does not silently switch an existing store
    assert keysource.select(home, {"AUTHSOME_PASSPHRASE": "pw"}).name == "file"


def test_passphrase_source(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h")
    key = keysource.select(home, {"AUTHSOME_PASSPHRASE": "correct horse"}).load()
    assert keysource.select(home, {"AUTHSOME_PASSPHRASE": "correct horse"}).load() == key
    assert stat.S_IMODE((home.root / "kdf.json").stat().st_mode) == 0o600
    with pytest.raises(StoreUnavailable, match="wrong passphrase"):
        keysource.select(home, {"AUTHSOME_PASSPHRASE": "wrong"}).load()
    with pytest.raises(StoreUnavailable, match="locked with a passphrase"):
        keysource.select(home, {}).load()


def test_malformed_key_file(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h")
    source = keysource.select(home, {"AUTHSOME_KEY_SOURCE": "file"})
    (home.root / "master.key").write_text("garbage")
    with pytest.raises(StoreUnavailable, match="malformed"):
        source.load()


def test_unknown_forced_source(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="AUTHSOME_KEY_SOURCE"):
        keysource.select(Home.resolve(tmp_path / "h"), {"AUTHSOME_KEY_SOURCE": "vault9000"})


def test_keyring_source_with_a_real_file_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """keyrings.alt's encrypted-file-free plaintext backend stands in for an OS keyring (a real backend)."""
    import keyring
    from keyrings.alt.file import PlaintextKeyring

    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")  # type: ignore[misc]
    monkeypatch.setattr(keyring.core, "_keyring_backend", backend)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    home = Home.resolve(tmp_path / "h")
    assert keysource.keyring_viable()
    source = keysource.select(home, {})
    assert source.name == "keyring"
    key = source.load()
    assert keysource.select(home, {}).load() == key
    assert not (home.root / "master.key").exists()
    assert "keyring" in source.describe().lower()


def test_symlinked_home_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(StoreUnavailable, match="symlink"):
        Home.resolve(link)


def test_a_master_key_in_the_environment_is_used_and_never_recorded(tmp_path: Path) -> None:
    import base64

    home = Home.resolve(tmp_path / "home")
    key = bytes(range(32))
    env = {"AUTHSOME_MASTER_KEY": base64.b64encode(key).decode(), "AUTHSOME_KEY_SOURCE": "file"}
    source = keysource.select(home, env)
    assert source.name == "env" and source.load() == key
    assert "key_source" not in home.read_config()  # a replica's key comes with it; the home keeps its own choice
    assert not (home.root / "master.key").exists()
    with pytest.raises(StoreUnavailable, match="AUTHSOME_MASTER_KEY is malformed"):
        keysource.select(home, {"AUTHSOME_MASTER_KEY": "c2hvcnQ="}).load()
