"""Reading a home of the authsome package 0.5 to 0.7.x.

Everything is under ``server/``: ``authsome.db`` (SQLite: principals, their vaults, custom provider definitions as
JSON), ``kv_store/`` (a diskcache directory: table ``Cache`` in ``cache.db``, keys ``<collection>::<key>``, values
JSON documents whose ``value`` holds the record) and ``master.key`` (a base64 master secret; also
``AUTHSOME_MASTER_KEY``, ``AUTHSOME_MASTER_KEY_FILE`` or the OS keyring, service ``authsome``, user ``master_key``).

Records are sealed with a data key (DEK): ``__vault_meta__::__dek__`` holds it wrapped with AES-256-GCM under a key
derived from the master secret's text with Argon2id (parameters and salt stored beside it). Each sealed value is
``{"__encrypted_data__": base64(nonce || ciphertext+tag), "__encryption_version__": 1}``; inside is ``{"data":
"<record JSON>"}``. Connections live in collection ``vault:<vault_id>``, OAuth clients (for every vault) in
``server``. The admin's vault (the first principal's) becomes the profile ``default``; another vault keeps its id.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authsome.errors import StoreUnavailable
from authsome.store import crypto
from authsome.store.legacy import files, records
from authsome.store.legacy.model import LegacyData, LegacyHome, LegacyProvider
from authsome.store.legacy.v02 import keyring_secret

_DEK = "__vault_meta__::__dek__"
_NONCE = 12
_RESTORE = "restore server/kv_store from a backup"
_MODE_RAW, _MODE_TEXT = 1, 3  # diskcache's storage modes for a string kept in the row / in a file beside it
_HINT = (
    "make authsome's master secret available as it was for that tool "
    "(server/master.key, AUTHSOME_MASTER_KEY or AUTHSOME_MASTER_KEY_FILE, or the OS keyring)"
)


def read(home: LegacyHome, env: Mapping[str, str]) -> LegacyData:
    """Every vault (as a profile), connection, OAuth client and custom provider of the home; only reads."""
    server = home.root / "server"
    data = LegacyData(home)
    vault_owners, data.providers = _relational(server / "authsome.db")
    entries = _entries(server / "kv_store")
    if _DEK not in entries:
        if any(key.startswith("vault:") for key in entries):
            raise StoreUnavailable(
                f"{home.root} was written by authsome 0.3 or 0.4, whose store this version cannot read",
                "export the credentials with that authsome (`authsome export`) and log in here",
            )
        return data
    dek = _data_key(_document(entries[_DEK]), _master_secret(server, env))
    clients: dict[str, records.Record] = {}
    by_vault: dict[str, list[records.Record]] = {}
    for compound, raw in sorted(entries.items()):
        collection, _, key = compound.partition("::")
        is_client = collection == "server" and key.startswith("server:provider:") and key.endswith(":client")
        is_connection = collection.startswith("vault:") and ":connection:" in key
        if not (is_client or is_connection):
            continue
        try:
            record = _unseal(dek, _document(raw))
        except (crypto.DecryptionError, ValueError, KeyError, TypeError):
            data.skipped.append(f"{key}: does not decrypt")
            continue
        if is_client:
            clients[key[len("server:provider:") : -len(":client")]] = record
        else:
            by_vault.setdefault(collection[len("vault:") :], []).append(record)
    for vault_id, name in _profile_names(vault_owners, by_vault):
        owner = vault_owners.get(vault_id)
        origin = f"vault {vault_id}" + (f" ({owner[0]})" if owner else "")
        try:
            records.valid_name("profile", name)
        except records.Skipped as why:
            data.skipped.append(f"{origin}: {why}")
            continue
        profile, skipped = records.build_profile(name, origin, by_vault.get(vault_id, []), clients, home.label)
        data.profiles.append(profile)
        data.skipped.extend(skipped)
    return data


def _relational(db: Path) -> tuple[dict[str, tuple[str, int]], list[LegacyProvider]]:
    """({vault id: (owner's email, rank)}, custom providers) from ``authsome.db``; rank 0 is the first principal."""
    if not db.is_file():
        return {}, []
    owners: dict[str, tuple[str, int]] = {}
    providers: list[LegacyProvider] = []
    with files.readonly(db) as conn:
        if files.has_table(conn, "principal_vault_bindings") and files.has_table(conn, "principals"):
            rows = conn.execute(
                "SELECT b.vault_id, p.email FROM principal_vault_bindings b JOIN principals p USING (principal_id) "
                "WHERE b.is_default ORDER BY p.created_at, p.principal_id"
            ).fetchall()
            for rank, (vault_id, email) in enumerate(rows):
                owners.setdefault(str(vault_id), (str(email), rank))
        if files.has_table(conn, "custom_provider_definitions"):
            query = "SELECT name, definition_json FROM custom_provider_definitions ORDER BY name"
            for name, text in conn.execute(query):
                providers.append(LegacyProvider(str(name), str(text), in_place=False))
    return owners, providers


def _profile_names(owners: Mapping[str, tuple[str, int]], vaults: Mapping[str, object]) -> list[tuple[str, str]]:
    """(vault id, profile name): the first principal's vault (or the only vault) is ``default``."""
    ids = sorted(set(vaults), key=lambda v: (owners.get(v, ("", 1 << 30))[1], v))
    return [(v, "default" if i == 0 else v.lower()) for i, v in enumerate(ids)]


def _entries(kv_dir: Path) -> dict[str, str]:
    """Every string-keyed entry of the diskcache directory, as its stored JSON text."""
    db = kv_dir / "cache.db"
    if not db.is_file():
        return {}
    with files.readonly(db) as conn:
        if not files.has_table(conn, "Cache"):
            return {}
        rows = conn.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
    out: dict[str, str] = {}
    for key, raw, mode, filename, value in rows:
        if not raw or not isinstance(key, str):
            continue
        if mode == _MODE_RAW and isinstance(value, str):
            out[key] = value
        elif mode == _MODE_TEXT and isinstance(filename, str):
            path = (kv_dir / filename).resolve()
            if path.is_relative_to(kv_dir.resolve()) and path.is_file():  # a large value, kept in its own file
                out[key] = path.read_text(encoding="utf-8")
    return out


def _document(raw: str) -> dict[str, Any]:
    """The stored value inside one diskcache entry (a JSON document with the value as an object or JSON text)."""
    entry = json.loads(raw)
    value = entry["value"]
    doc = json.loads(value) if isinstance(value, str) else value
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    return doc


def _master_secret(server: Path, env: Mapping[str, str]) -> str:
    if env.get("AUTHSOME_MASTER_KEY", "").strip():
        return env["AUTHSOME_MASTER_KEY"].strip()
    key_file = Path(env["AUTHSOME_MASTER_KEY_FILE"]) if env.get("AUTHSOME_MASTER_KEY_FILE") else server / "master.key"
    try:
        text = key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise StoreUnavailable(f"cannot read {key_file}: {exc.strerror}", "check its owner and mode") from None
    secret = text or keyring_secret()
    if not secret:
        raise StoreUnavailable(f"the master secret of {server.parent} is not available", _HINT)
    return secret


def _data_key(record: Mapping[str, Any], secret: str) -> bytes:
    try:
        kdf, wrapped = record["kdf"], record["wrapped_dek"]
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(wrapped["nonce"])
        sealed = base64.b64decode(wrapped["ciphertext"])
        params = {"iterations": kdf["time_cost"], "lanes": kdf["parallelism"], "memory_kib": kdf["memory_cost"]}
        params = {name: int(value) for name, value in params.items()}
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise StoreUnavailable("authsome's wrapped data key is malformed", _RESTORE) from None
    try:
        kek = crypto.argon2id(secret.encode("utf-8"), salt, **params)
    except crypto.DecryptionError as exc:
        raise StoreUnavailable(f"cannot derive authsome's key: {exc}", "upgrade the cryptography package") from None
    try:
        return crypto.decrypt_aead(kek, nonce, sealed)
    except crypto.DecryptionError:
        raise StoreUnavailable("the master secret found does not open authsome's data key", _HINT) from None


def _unseal(dek: bytes, sealed: Mapping[str, Any]) -> dict[str, Any]:
    if int(sealed["__encryption_version__"]) != 1:
        raise ValueError("unknown encryption version")
    blob = base64.b64decode(sealed["__encrypted_data__"], validate=True)
    inner = json.loads(crypto.decrypt_aead(dek, blob[:_NONCE], blob[_NONCE:]))
    record = json.loads(inner["data"])
    if not isinstance(record, dict):
        raise ValueError("not an object")
    return record
