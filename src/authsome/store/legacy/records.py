"""The authsome package's connection and OAuth-client records (JSON, the same in 0.2.x and 0.5+) as this project's
models. Secrets become :class:`Secret` at once; a record that cannot be used is skipped with the reason."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from authsome.errors import UsageError
from authsome.models import ClientConfig, ConnectionStatus, Credential
from authsome.paths import check_name
from authsome.secret import Secret
from authsome.store.legacy.model import LegacyConnection, LegacyProfile

Record = Mapping[str, Any]
# authsome's statuses; "revoked" and "invalid" tokens are kept but marked unusable, "not_connected" holds no secret.
_STATUS: dict[str, ConnectionStatus] = {"connected": "connected", "expired": "connected", "invalid": "invalid"}


class Skipped(Exception):
    """A record that is not imported; ``str()`` says why (never a secret)."""


def valid_name(kind: str, name: str) -> str:
    """``name`` if this project accepts it for ``kind`` (profile, provider, connection), else :class:`Skipped`."""
    try:
        return check_name(kind, name)
    except UsageError:
        raise Skipped(f"the {kind} name {name!r} is not allowed here (lowercase letters, digits, '-', '_')") from None


def build_profile(
    name: str, origin: str, connections: list[Record], clients: Mapping[str, Record], label: str
) -> tuple[LegacyProfile, list[str]]:
    """A profile from its raw connection and client records; the second item lists what was skipped and why."""
    profile = LegacyProfile(name, origin)
    skipped: list[str] = []
    for provider, record in sorted(clients.items()):
        try:
            valid_name("provider", provider)
            client = _client(record, label)
        except Skipped as why:
            skipped.append(f"{origin}: OAuth client of {provider}: {why}")
            continue
        if client is not None:
            profile.clients[provider] = client
    for record in connections:
        where = f"{origin}: {record.get('provider')}/{record.get('connection_name')}"
        try:
            profile.connections.append(_connection(record, clients.get(str(record.get("provider"))), label))
        except Skipped as why:
            skipped.append(f"{where}: {why}")
    profile.connections.sort(key=lambda c: (c.provider, c.name))
    return profile, skipped


def _connection(record: Record, client: Record | None, label: str) -> LegacyConnection:
    provider = valid_name("provider", str(record.get("provider") or ""))
    name = valid_name("connection", str(record.get("connection_name") or "default"))
    status = str(record.get("status") or "connected")
    if status == "not_connected":
        raise Skipped("it was never connected (nothing stored)")
    if record.get("credentials"):
        raise Skipped("browser-session (cookie) connections are not supported here")
    kind = record.get("auth_type")
    metadata: dict[str, Any] = dict(record.get("metadata") or {})
    base_url = record.get("base_url") or (client or {}).get("base_url")
    if base_url:
        metadata["base_url"] = str(base_url)
    metadata["imported_from"] = label
    common: dict[str, Any] = {"account": _account(record.get("account")), "metadata": metadata}
    if kind == "api_key":
        cred = Credential(kind="api_key", api_key=_secret(record, "api_key", required=True), **common)
    elif kind == "oauth2":
        access = _secret(record, "access_token")
        refresh = _secret(record, "refresh_token")
        if access is None and refresh is None:
            raise Skipped("it holds neither an access token nor a refresh token")
        expires_at = _epoch(record.get("expires_at"))
        cred = Credential(
            kind="oauth2",
            access_token=access,
            refresh_token=refresh,
            token_type=str(record.get("token_type") or "Bearer"),
            expires_at=0.0 if access is None else expires_at,  # no access token: refresh before first use
            scopes=tuple(str(s) for s in record.get("scopes") or ()),
            **common,
        )
    else:
        raise Skipped(f"its kind {kind!r} is not supported here")
    if status in _STATUS:
        return LegacyConnection(provider, name, cred, _STATUS[status])
    return LegacyConnection(provider, name, cred, "invalid", f"{status} in {label}; log in again")


def _client(record: Record, label: str) -> ClientConfig | None:
    client_id = record.get("client_id")
    if not client_id:
        return None  # only a base URL or scopes were kept: they travel with the connections
    metadata: dict[str, Any] = {"imported_from": label}
    if record.get("scopes") is not None:
        metadata["scopes"] = [str(s) for s in record["scopes"]]
    if record.get("base_url"):
        metadata["base_url"] = str(record["base_url"])
    return ClientConfig(client_id=str(client_id), client_secret=_secret(record, "client_secret"), metadata=metadata)


def _secret(record: Record, field: str, *, required: bool = False) -> Secret | None:
    value = record.get(field)
    if isinstance(value, str) and value.strip():
        return Secret(value.strip())
    if required:
        raise Skipped(f"it has no {field.replace('_', ' ')}")
    return None


def _account(account: object) -> str | None:
    if isinstance(account, Mapping):
        for key in ("label", "id"):
            if account.get(key):
                return str(account[key])
    return None


def _epoch(value: object) -> float | None:
    """An RFC 3339 time (authsome stores datetimes so) as unix seconds; a naive time is UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise Skipped(f"its expiry {value!r} is not a date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
