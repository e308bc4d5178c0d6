"""AES-256-GCM envelopes and key derivation: the only module that imports ``cryptography``.

An envelope is ``{"enc": 1, "alg": "AES-256-GCM", "kid": …, "nonce": …, "ciphertext": …}``. The associated data
binds a ciphertext to the place it was written for (profile, record key and field), so a value copied to another
record, or edited in place, fails to decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

ALG = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
SCRYPT_PARAMS = {"n": 2**15, "r": 8, "p": 1}


class DecryptionError(Exception):
    """The envelope is malformed, was made with another key, or its ciphertext/associated data was altered."""


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


def key_id(key: bytes) -> str:
    """A short public identifier for a key (HMAC of a constant, so it reveals nothing about the key)."""
    return hmac.new(key, b"authsome key id", hashlib.sha256).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypt(key: bytes, plaintext: str, aad: str) -> dict[str, Any]:
    """Encrypt ``plaintext`` under ``key``, bound to ``aad``."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), aad.encode("utf-8"))
    return {"enc": 1, "alg": ALG, "kid": key_id(key), "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}


def decrypt(key: bytes, envelope: object, aad: str) -> str:
    """Decrypt an envelope made by :func:`encrypt`; :class:`DecryptionError` on any mismatch or damage."""
    if not isinstance(envelope, dict) or envelope.get("enc") != 1 or envelope.get("alg") != ALG:
        raise DecryptionError("not an authsome envelope")
    if envelope.get("kid") != key_id(key):
        raise DecryptionError("encrypted with a different master key")
    try:
        nonce = base64.b64decode(envelope["nonce"], validate=True)
        ciphertext = base64.b64decode(envelope["ciphertext"], validate=True)
        return AESGCM(key).decrypt(nonce, ciphertext, aad.encode("utf-8")).decode("utf-8")
    except (KeyError, TypeError, ValueError, InvalidTag):
        raise DecryptionError("ciphertext or associated data does not verify") from None


def derive_key(passphrase: str, salt: bytes, n: int = SCRYPT_PARAMS["n"], r: int = 8, p: int = 1) -> bytes:
    """Derive a 256-bit key from a passphrase with scrypt."""
    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def subkey(key: bytes, label: str) -> bytes:
    """A key for one purpose (e.g. the audit chain), derived from the master key."""
    return hmac.new(key, b"authsome subkey|" + label.encode(), hashlib.sha256).digest()


def mac(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` as hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def decrypt_aead(key: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    """Plain AES-256-GCM decryption without associated data (how the authsome package seals its store), used only to
    read such a store; :class:`DecryptionError` on any mismatch."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, None)
    except (ValueError, InvalidTag):
        raise DecryptionError("ciphertext does not verify with this key") from None


def argon2id(secret: bytes, salt: bytes, *, iterations: int, lanes: int, memory_kib: int) -> bytes:
    """A 256-bit key derived with Argon2id (RFC 9106), as the authsome package wraps its data key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    try:
        kdf = Argon2id(salt=salt, length=KEY_BYTES, iterations=iterations, lanes=lanes, memory_cost=memory_kib)
    except UnsupportedAlgorithm:
        raise DecryptionError("this build of the cryptography package has no Argon2id") from None
    except ValueError as exc:
        raise DecryptionError(f"unusable Argon2id parameters: {exc}") from None
    return kdf.derive(secret)
