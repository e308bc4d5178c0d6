"""authsome: a local credential gateway for AI agents.

The public API is the :class:`Authsome` facade, its result models and the errors; everything else is internal.
"""

from authsome.api import Authsome, LoginOptions, ProviderStatus
from authsome.errors import (
    AuthenticationFailed,
    AuthsomeError,
    CredentialMissing,
    ProviderNotFound,
    RefreshFailed,
    StoreUnavailable,
    UsageError,
)
from authsome.models import ClientConfig, ConnectionInfo, Credential
from authsome.secret import Secret

__all__ = [
    "AuthenticationFailed",
    "Authsome",
    "AuthsomeError",
    "ClientConfig",
    "ConnectionInfo",
    "Credential",
    "CredentialMissing",
    "LoginOptions",
    "ProviderNotFound",
    "ProviderStatus",
    "RefreshFailed",
    "Secret",
    "StoreUnavailable",
    "UsageError",
]
