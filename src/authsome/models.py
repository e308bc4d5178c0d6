"""Plain data shared by the layers: what a login flow returns and what the store holds about a connection.

Secrets are always :class:`~authsome.secret.Secret`; ``redacted()`` gives a JSON-safe view without them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from authsome.secret import Secret

CredentialKind = Literal["api_key", "oauth2"]
ConnectionStatus = Literal["connected", "expired", "invalid"]

DEFAULT_PROFILE = "default"
DEFAULT_CONNECTION = "default"


@dataclass(frozen=True)
class Credential:
    """What a login (or refresh) flow produces. Flows return these; only the api layer stores them."""

    kind: CredentialKind
    api_key: Secret | None = None
    access_token: Secret | None = None
    refresh_token: Secret | None = None
    id_token: Secret | None = None
    token_type: str = "Bearer"
    expires_at: float | None = None  # unix seconds
    scopes: tuple[str, ...] = ()
    account: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def secret_for_request(self) -> Secret:
        """The value that goes on the wire: the API key, or the OAuth access token (never the refresh token)."""
        value = self.api_key if self.kind == "api_key" else self.access_token
        if value is None:
            raise ValueError("credential has no usable secret")
        return value

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until expiry, or None when the credential does not expire."""
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)


@dataclass(frozen=True)
class ClientConfig:
    """An OAuth client registered for one provider in one profile (client secret encrypted at rest)."""

    client_id: str
    client_secret: Secret | None = None
    registered: bool = False  # created by dynamic client registration (RFC 7591)
    redirect_uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionInfo:
    """Metadata about one stored connection; never holds a secret."""

    provider: str
    name: str
    kind: CredentialKind
    status: ConnectionStatus
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None
    account: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    has_refresh_token: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when the record cannot be read (tampered, corrupt)

    def redacted(self) -> dict[str, Any]:
        """JSON-safe dict for ``--json`` output."""
        return {
            "provider": self.provider,
            "connection": self.name,
            "kind": self.kind,
            "status": self.status,
            "scopes": list(self.scopes),
            "expires_at": self.expires_at,
            "account": self.account,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "has_refresh_token": self.has_refresh_token,
            "metadata": self.metadata,
            "error": self.error,
        }
