"""Token responses (RFC 6749 section 5.1) checked and turned into a :class:`Credential`, and the account label.

Checks: ``access_token`` present; every token a single printable line without spaces or control characters;
``token_type`` Bearer (case-insensitive; a missing type is taken as Bearer); ``expires_in`` a positive number of
seconds; ``scope`` parsed (space or comma separated; a missing scope means "what was asked", RFC 6749 section 5.1).
Anything else is :class:`AuthenticationFailed` (at login) whose message never includes a token.

The account label comes from the ID token's claims (``email``, ``preferred_username``…) or the provider's userinfo
endpoint. The ID token is decoded *without* verifying its signature: it came straight from the token endpoint over
TLS (OpenID Connect Core 3.1.3.7 allows that in place of a signature check) and is used only for a display label.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from authsome.errors import AuthenticationFailed
from authsome.models import Credential
from authsome.secret import Secret

if TYPE_CHECKING:
    import httpx

MAX_TOKEN_LENGTH = 64 * 1024
MAX_LIFETIME = 10 * 365 * 24 * 3600
LABEL_CLAIMS = ("email", "preferred_username", "login", "username", "upn", "name")
_BAD_TOKEN_CHAR = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
_SCOPE_SPLIT = re.compile(r"[\s,]+")


def parse_scopes(value: object) -> tuple[str, ...]:
    """Scopes from a response or option: ``"a b"``, ``"a,b"`` (GitHub) or a list."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else _SCOPE_SPLIT.split(str(value))
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text and text not in out:
            out.append(text)
    return tuple(out)


def _token(data: Mapping[str, Any], name: str, *, required: bool, error: type[Exception]) -> Secret | None:
    value = data.get(name)
    if value is None or (value == "" and not required):
        if required:
            raise error(f"the token response has no {name}", "the provider answered without a token; try again")
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_LENGTH or _BAD_TOKEN_CHAR.search(value):
        raise error(
            f"the token response has an invalid {name} (empty, too long, or with spaces or control characters)",
            "the provider's answer cannot be used; report this to the provider",
        )
    return Secret(value)


def _expires_in(data: Mapping[str, Any], error: type[Exception]) -> float | None:
    raw = data.get("expires_in")
    if raw is None or raw == "":
        return None
    try:
        seconds = float(raw) if not isinstance(raw, bool) else -1.0
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds <= MAX_LIFETIME:
        raise error("the token response has an invalid expires_in", "expected a positive number of seconds")
    return seconds


def credential_from_response(
    data: Mapping[str, Any],
    *,
    requested_scopes: Sequence[str],
    now: float,
    previous: Credential | None = None,
    metadata: Mapping[str, Any] | None = None,
    error: type[Exception] = AuthenticationFailed,
) -> Credential:
    """Check a token response and build the credential; ``previous`` (a refresh) supplies what the server omitted.

    ``metadata["expires_in"]`` records the token lifetime, which :func:`authsome.flows.refresh.needs_refresh` uses to
    shorten the refresh window for short-lived tokens.
    """
    access = _token(data, "access_token", required=True, error=error)
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise error(
            f"the provider issued a {str(token_type)[:20]!r} token; authsome can only use Bearer tokens",
            "this provider needs a different kind of client",
        )
    refresh = _token(data, "refresh_token", required=False, error=error)
    id_token = _token(data, "id_token", required=False, error=error)
    lifetime = _expires_in(data, error)
    if "scope" in data and data.get("scope") is not None:
        scopes = parse_scopes(data.get("scope"))
    elif previous is not None and previous.scopes:
        scopes = previous.scopes
    else:
        scopes = tuple(requested_scopes)
    meta: dict[str, Any] = dict(previous.metadata) if previous is not None else {}
    meta.update(metadata or {})
    meta.pop("expires_in", None)
    if lifetime is not None:
        meta["expires_in"] = lifetime
    return Credential(
        kind="oauth2",
        access_token=access,
        refresh_token=refresh if refresh is not None else (previous.refresh_token if previous else None),
        id_token=id_token if id_token is not None else (previous.id_token if previous else None),
        token_type="Bearer",
        expires_at=now + lifetime if lifetime is not None else None,
        scopes=scopes,
        account=previous.account if previous is not None else None,
        metadata=meta,
    )


def missing_scopes(requested: Iterable[str], granted: Iterable[str]) -> tuple[str, ...]:
    """Scopes that were asked for but not granted (in the order asked)."""
    have = set(granted)
    return tuple(s for s in requested if s not in have)


def id_token_claims(id_token: Secret | None) -> dict[str, Any]:
    """The claims of a JWT ID token, decoded without verification (display label only); {} when malformed."""
    if id_token is None:
        return {}
    parts = id_token.reveal().split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def label_from_claims(claims: Mapping[str, Any], keys: Sequence[str] = LABEL_CLAIMS) -> str | None:
    """The first usable human label among ``keys`` (a short printable string)."""
    for key in keys:
        value = claims.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            text = value.strip()
            if text and len(text) <= 200 and text.isprintable():
                return text
    return None


def userinfo(http: httpx.Client, url: str, access_token: Secret) -> dict[str, Any]:
    """Claims from a userinfo endpoint (OpenID ``/userinfo``, GitHub ``/user``…); {} when it does not answer well."""
    from authsome.flows.http import http_errors

    try:
        response = http.get(
            url, headers={"Authorization": f"Bearer {access_token.reveal()}", "Accept": "application/json"}
        )
        data = response.json() if response.status_code == 200 else None
    except (ValueError, *http_errors()):  # type: ignore[misc]  # a tuple of exception classes, built at run time
        return {}
    return data if isinstance(data, dict) else {}


def account_label(credential: Credential, *, userinfo_claims: Mapping[str, Any] | None = None) -> str | None:
    """Best label: ID-token email/username, else userinfo's, else the ID token's or userinfo's ``sub``/``id``."""
    claims = id_token_claims(credential.id_token)
    info = userinfo_claims or {}
    return (
        label_from_claims(claims)
        or label_from_claims(info)
        or label_from_claims(claims, ("sub",))
        or label_from_claims(info, ("sub", "id"))
    )


def with_account(credential: Credential, account: str | None) -> Credential:
    return replace(credential, account=account) if account else credential
