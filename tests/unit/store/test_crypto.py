from __future__ import annotations

import base64

import pytest

from authsome.store import crypto


def test_round_trip_and_envelope_shape() -> None:
    key = crypto.new_key()
    env = crypto.encrypt(key, "sk-secret", "profile|connection/openai/default|api_key")
    assert set(env) == {"enc", "alg", "kid", "nonce", "ciphertext"}
    assert env["enc"] == 1 and env["alg"] == "AES-256-GCM"
    assert "sk-secret" not in str(env)
    assert crypto.decrypt(key, env, "profile|connection/openai/default|api_key") == "sk-secret"


def test_nonces_differ_per_encryption() -> None:
    key = crypto.new_key()
    assert crypto.encrypt(key, "x", "a")["nonce"] != crypto.encrypt(key, "x", "a")["nonce"]


def test_associated_data_binds_the_record() -> None:
    key = crypto.new_key()
    env = crypto.encrypt(key, "sk-secret", "connection/openai/default|api_key")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(key, env, "connection/anthropic/default|api_key")


def test_edited_ciphertext_fails() -> None:
    key = crypto.new_key()
    env = crypto.encrypt(key, "sk-secret", "aad")
    raw = bytearray(base64.b64decode(env["ciphertext"]))
    raw[0] ^= 1
    env["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(key, env, "aad")


def test_wrong_key_is_named() -> None:
    env = crypto.encrypt(crypto.new_key(), "v", "aad")
    with pytest.raises(crypto.DecryptionError, match="different master key"):
        crypto.decrypt(crypto.new_key(), env, "aad")


@pytest.mark.parametrize("bad", [None, "text", {}, {"enc": 2, "alg": "AES-256-GCM"}])
def test_malformed_envelopes(bad: object) -> None:
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(crypto.new_key(), bad, "aad")


def test_passphrase_derivation_is_deterministic_per_salt() -> None:
    salt = b"0123456789abcdef"
    assert crypto.derive_key("pw", salt, n=2**10) == crypto.derive_key("pw", salt, n=2**10)
    assert crypto.derive_key("pw", salt, n=2**10) != crypto.derive_key("pw2", salt, n=2**10)
