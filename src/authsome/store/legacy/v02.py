"""Reading a home of the authsome package 0.2.x.

Its layout is this project's own file names with other contents: ``config.json`` (``encryption.mode``: where the
master key is), ``master.key`` (a JSON object whose ``key`` is the base64 key) or the OS keyring (service
``authsome``, user ``master_key``), ``providers/<name>.json``, and ``profiles/<name>/store.db`` with a table
``kv(key, value)``. Keys are ``profile:<profile>:<provider>:connection:<name>`` and ``…:<provider>:client``; each
value is ``base64(nonce) "." base64(ciphertext+tag)``, AES-256-GCM without associated data, of the record's JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authsome.errors import StoreUnavailable
from authsome.paths import create_private_file_exclusive
from authsome.store import crypto
from authsome.store.keysource import decode_key
from authsome.store.legacy import files, records
from authsome.store.legacy.model import LegacyData, LegacyHome, LegacyProvider

_HINT = "make authsome's master key available as it was for that tool (its master.key file, or the OS keyring)"


def read(home: LegacyHome, env: Mapping[str, str]) -> LegacyData:
    """Every profile, connection, OAuth client and custom provider of the home; only reads."""
    data = LegacyData(home)
    data.providers = _providers(home.root / "providers")
    stores = _stores(home.root / "profiles")
    if not any(rows for _, rows in stores):
        return data
    key = _master_key(home.root, env)
    opened = failed = 0
    for profile_dir, rows in stores:
        connections: list[records.Record] = []
        clients: dict[str, records.Record] = {}
        for store_key, value in rows:
            parsed = _parse(store_key)
            if parsed is None:
                continue
            provider, kind = parsed
            try:
                record = json.loads(_open(key, value))
                opened += 1
            except (crypto.DecryptionError, ValueError):
                failed += 1
                data.skipped.append(f"profiles/{profile_dir.name}: {store_key}: does not decrypt")
                continue
            if kind == "client":
                clients[provider] = record
            else:
                connections.append(record)
        try:
            name = records.valid_name("profile", profile_dir.name)
        except records.Skipped as why:
            data.skipped.append(f"profiles/{profile_dir.name}: {why}")
            continue
        profile, skipped = records.build_profile(name, f"profiles/{profile_dir.name}", connections, clients, home.label)
        data.profiles.append(profile)
        data.skipped.extend(skipped)
    if failed and not opened:
        raise StoreUnavailable(f"the master key found does not open the store of {home.label} in {home.root}", _HINT)
    return data


def _stores(profiles: Path) -> list[tuple[Path, list[tuple[str, str]]]]:
    out = []
    for profile_dir in sorted(p for p in profiles.iterdir() if p.is_dir()) if profiles.is_dir() else []:
        db = profile_dir / "store.db"
        if not db.is_file():
            continue
        with files.readonly(db) as conn:
            if not files.has_table(conn, "kv"):
                continue  # a profile of this project only
            rows = conn.execute("SELECT key, value FROM kv ORDER BY key").fetchall()
        out.append((profile_dir, [(str(k), str(v)) for k, v in rows]))
    return out


def _parse(store_key: str) -> tuple[str, str] | None:
    """(provider, "connection"|"client") of a record key; None for the records not imported (metadata, state)."""
    parts = store_key.split(":")
    if len(parts) < 4 or parts[0] != "profile":
        return None
    if len(parts) >= 5 and parts[3] == "connection":
        return parts[2], "connection"
    if len(parts) == 4 and parts[3] == "client":
        return parts[2], "client"
    return None


def _open(key: bytes, value: str) -> bytes:
    nonce_b64, _, sealed_b64 = value.partition(".")
    try:
        nonce, sealed = base64.b64decode(nonce_b64, validate=True), base64.b64decode(sealed_b64, validate=True)
    except (binascii.Error, ValueError):
        raise crypto.DecryptionError("not a sealed value") from None
    return crypto.decrypt_aead(key, nonce, sealed)


def _master_key(root: Path, env: Mapping[str, str]) -> bytes:
    """authsome's master key, from where its ``config.json`` says it is."""
    mode = _encryption_mode(root / "config.json")
    order = {"keyring": ("keyring",), "env": ("env",), "auto": ("env", "keyring", "file")}.get(mode, ("file",))
    for where in order:
        if where == "env" and env.get("AUTHSOME_MASTER_KEY", "").strip():
            return decode_key(env["AUTHSOME_MASTER_KEY"], "AUTHSOME_MASTER_KEY")
        if where == "file" and (root / "master.key").is_file():
            return decode_key((root / "master.key").read_text(), str(root / "master.key"))
        if where == "keyring":
            stored = keyring_secret()
            if stored:
                return decode_key(stored, "the OS keyring (authsome / master_key)")
    raise StoreUnavailable(f"the master key of {root} ({mode} mode) is not available", _HINT)


def share_key_file(root: Path) -> None:
    """Give a 0.2 home that has no ``master.key`` yet (its key file mode, nothing stored) one in authsome's own format.

    Otherwise this project's key file source would create ``master.key`` in its plain base64 form, which the authsome
    package cannot read: going back to it would fail. Written like this, both read the one key.
    """
    path = root / "master.key"
    if path.exists() or _encryption_mode(root / "config.json") != "local_key":
        return
    doc = {"version": 1, "key": base64.b64encode(crypto.new_key()).decode(), "algorithm": "AES-256-GCM"}
    doc["note"] = "Master key of authsome (read by the authsome package and by this project alike). Keep it private."
    create_private_file_exclusive(path, (json.dumps(doc, indent=2) + "\n").encode())


def _encryption_mode(config: Path) -> str:
    try:
        doc = json.loads(config.read_text())
    except (OSError, ValueError):
        return "local_key"
    encryption = doc.get("encryption") if isinstance(doc, dict) else None
    mode = encryption.get("mode") if isinstance(encryption, dict) else None
    return str(mode) if mode else "local_key"


def keyring_secret() -> str | None:
    """The secret the authsome package keeps in the OS keyring (service ``authsome``, user ``master_key``), if any."""
    try:
        import keyring

        value: Any = keyring.get_password("authsome", "master_key")
    except Exception:  # no backend, a locked keyring…: the same as absent
        return None
    return value if isinstance(value, str) and value else None


def _providers(directory: Path) -> list[LegacyProvider]:
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        found.append(LegacyProvider(path.stem, text, in_place=True))
    return found
