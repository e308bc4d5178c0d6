"""Where the master key comes from: the OS keyring when usable, else a 0600 key file, or a passphrase.

The source is chosen the first time a key is needed and recorded in ``config.json`` (``key_source``), so later
runs go straight to it without probing. ``AUTHSOME_KEY_SOURCE`` (keyring|file|passphrase) forces the choice for a
new home; ``AUTHSOME_PASSPHRASE`` selects (and unlocks) the passphrase source for headless use.
``AUTHSOME_MASTER_KEY`` (the key itself, base64), when set, is used whatever the home recorded, and never recorded:
how replicas of a gateway on a shared store, or a container, get the one key (a secret manager puts it there).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from authsome.errors import StoreUnavailable
from authsome.paths import Home, create_private_file_exclusive, file_lock

KEY_BYTES = 32
SourceName = Literal["keyring", "file", "passphrase", "env"]
SOURCES: tuple[SourceName, ...] = ("keyring", "file", "passphrase")  # what a home can record; "env" never is
MASTER_KEY_VAR = "AUTHSOME_MASTER_KEY"
KEYRING_SERVICE = "authsome"
_CHECK_PLAINTEXT = "authsome passphrase check"


class KeySource(Protocol):
    """Loads (creating on first use) the 32-byte master key."""

    name: SourceName

    def load(self) -> bytes: ...

    def exists(self) -> bool:
        """Whether the key (or, for a passphrase, its salt) has been created; only reads."""
        ...

    def describe(self) -> str: ...


def decode_key(text: str, where: str) -> bytes:
    """A base64 key, alone or as the ``"key"`` of a JSON object (how the authsome package writes ``master.key``, so
    a home shared with it keeps one key file that both read)."""
    encoded = text.strip()
    if encoded.startswith("{"):
        try:
            doc = json.loads(encoded)
        except ValueError:
            doc = None
        encoded = doc["key"] if isinstance(doc, dict) and isinstance(doc.get("key"), str) else ""
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StoreUnavailable(
            f"the master key in {where} is malformed", "restore it from a backup, or move the home aside"
        )
    return key


@dataclass
class FileKeySource:
    """``master.key`` in the home: base64, 0600, created atomically."""

    home: Home
    name: SourceName = "file"

    @property
    def path(self) -> os.PathLike[str]:
        return self.home.root / "master.key"

    def load(self) -> bytes:
        path = self.home.root / "master.key"
        if not path.exists():
            from authsome.store import crypto

            create_private_file_exclusive(path, base64.b64encode(crypto.new_key()) + b"\n")
        try:
            return decode_key(path.read_text(), str(path))
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {path}: {exc.strerror}", "check its owner and mode (0600)") from None

    def exists(self) -> bool:
        return (self.home.root / "master.key").exists()

    def describe(self) -> str:
        return f"key file {self.home.root / 'master.key'}"


@dataclass
class KeyringKeySource:
    """The OS keyring (macOS Keychain, Secret Service, Windows Credential Locker…)."""

    home: Home
    name: SourceName = "keyring"

    @property
    def username(self) -> str:
        digest = hashlib.sha256(str(self.home.root).encode()).hexdigest()[:16]
        return f"master-key:{digest}"

    def load(self) -> bytes:
        import keyring
        from keyring.errors import KeyringError

        try:
            stored = keyring.get_password(KEYRING_SERVICE, self.username)
            if stored is None:
                with file_lock(self.home.root / ".key.lock"):
                    stored = keyring.get_password(KEYRING_SERVICE, self.username)
                    if stored is None:
                        from authsome.store import crypto

                        stored = base64.b64encode(crypto.new_key()).decode()
                        keyring.set_password(KEYRING_SERVICE, self.username, stored)
        except KeyringError as exc:
            raise StoreUnavailable(
                f"the OS keyring failed: {exc}", "unlock the keyring, or set AUTHSOME_PASSPHRASE"
            ) from None
        return decode_key(stored, "the OS keyring")

    def exists(self) -> bool:
        import keyring
        from keyring.errors import KeyringError

        try:
            return keyring.get_password(KEYRING_SERVICE, self.username) is not None
        except KeyringError as exc:
            raise StoreUnavailable(
                f"the OS keyring failed: {exc}", "unlock the keyring, or set AUTHSOME_PASSPHRASE"
            ) from None

    def describe(self) -> str:
        import keyring

        backend = keyring.get_keyring()
        return f"OS keyring ({type(backend).__module__}.{type(backend).__name__})"


@dataclass
class PassphraseKeySource:
    """A key derived with scrypt from ``AUTHSOME_PASSPHRASE``; salt and a check value live in ``kdf.json``."""

    home: Home
    passphrase: str | None
    name: SourceName = "passphrase"

    def load(self) -> bytes:
        if not self.passphrase:
            raise StoreUnavailable("this store is locked with a passphrase", "set AUTHSOME_PASSPHRASE")
        from authsome.store import crypto

        path = self.home.root / "kdf.json"
        if not path.exists():
            salt = os.urandom(16)
            key = crypto.derive_key(self.passphrase, salt)
            doc = {"kdf": "scrypt", "salt": base64.b64encode(salt).decode(), **crypto.SCRYPT_PARAMS}
            doc["check"] = crypto.encrypt(key, _CHECK_PLAINTEXT, "kdf-check")
            create_private_file_exclusive(path, json.dumps(doc).encode())
        try:
            doc = json.loads(path.read_text())
            salt = base64.b64decode(doc["salt"])
            key = crypto.derive_key(self.passphrase, salt, n=int(doc["n"]), r=int(doc["r"]), p=int(doc["p"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise StoreUnavailable(f"{path} is unreadable or malformed", "restore it from a backup") from None
        try:
            crypto.decrypt(key, doc.get("check"), "kdf-check")
        except crypto.DecryptionError:
            raise StoreUnavailable("wrong passphrase for this store", "check AUTHSOME_PASSPHRASE") from None
        return key

    def exists(self) -> bool:
        return (self.home.root / "kdf.json").exists()

    def describe(self) -> str:
        return f"passphrase (scrypt, {self.home.root / 'kdf.json'})"


def keyring_viable() -> bool:
    """True when a real OS keyring backend is available and answers."""
    try:
        import keyring
        from keyring.backends import chainer, fail

        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring):
            return False
        if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
            return False
        if not os.environ.get("PYTHON_KEYRING_BACKEND") and getattr(backend, "priority", 0) < 1:
            return False
        backend.get_password(KEYRING_SERVICE, "viability-probe")
        return True
    except Exception:
        return False


@dataclass
class EnvKeySource:
    """The key given in ``AUTHSOME_MASTER_KEY`` (base64 of 32 bytes)."""

    value: str
    name: SourceName = "env"

    def load(self) -> bytes:
        return decode_key(self.value, MASTER_KEY_VAR)

    def exists(self) -> bool:
        return True

    def describe(self) -> str:
        return f"{MASTER_KEY_VAR} (the environment)"


def build(name: SourceName, home: Home, env: Mapping[str, str]) -> KeySource:
    """Instantiate the named source."""
    if name == "env":
        return EnvKeySource(env.get(MASTER_KEY_VAR, ""))
    if name == "keyring":
        return KeyringKeySource(home)
    if name == "passphrase":
        return PassphraseKeySource(home, env.get("AUTHSOME_PASSPHRASE"))
    return FileKeySource(home)


def choose(home: Home, env: Mapping[str, str] | None = None) -> SourceName:
    """The home's recorded key source, else the one a first use would record; only reads (``doctor`` uses it)."""
    env = os.environ if env is None else env
    if env.get(MASTER_KEY_VAR):
        return "env"
    chosen = home.read_config().get("key_source")
    if chosen is None:
        forced = env.get("AUTHSOME_KEY_SOURCE")
        if forced is not None and forced not in SOURCES:
            raise StoreUnavailable(
                f"AUTHSOME_KEY_SOURCE={forced!r} is not one of {', '.join(SOURCES)}", "fix the variable"
            )
        if forced:
            chosen = forced
        elif env.get("AUTHSOME_PASSPHRASE"):
            chosen = "passphrase"
        else:
            chosen = "keyring" if keyring_viable() else "file"
    if chosen not in SOURCES:
        raise StoreUnavailable(
            f"config.json names an unknown key source {chosen!r}", f"use one of {', '.join(SOURCES)}"
        )
    return cast(SourceName, chosen)


def select(home: Home, env: Mapping[str, str] | None = None) -> KeySource:
    """The home's recorded key source, choosing (and recording) one on first use."""
    env = os.environ if env is None else env
    if env.get(MASTER_KEY_VAR):
        return build("env", home, env)
    if home.read_config().get("key_source") is None:
        wanted = choose(home, env)
        with file_lock(home.root / ".key.lock"):
            config = home.read_config()
            config.setdefault("key_source", wanted)
            home.write_config(config)
    return build(choose(home, env), home, env)
