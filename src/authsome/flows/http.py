"""HTTP for the OAuth flows: a configured authlib/httpx client, the transport rule for URLs, and safe error text.

Every OAuth URL must be ``https://``, except on a loopback host (127.0.0.1, localhost, ::1), where ``http://`` is
accepted for local servers and tests. Text that came from a server (``error_description``) is cleaned of control
characters, shortened and scrubbed of any secret in play before it goes into a message. authlib and httpx are imported
here lazily, so importing :mod:`authsome.flows` costs nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from authsome.errors import AuthenticationFailed, UsageError
from authsome.secret import Secret

if TYPE_CHECKING:
    import httpx

    from authsome.models import ClientConfig

TIMEOUT = 30.0
USER_AGENT = "authsome"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def is_loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in LOOPBACK_HOSTS


def require_secure_url(url: str | None, what: str) -> str:
    """Return ``url`` when it is https:// (or http:// on a loopback host); else raise :class:`UsageError`."""
    if not url:
        raise UsageError(f"no {what} is known for this provider", "add it to the provider definition")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_url(url):
        return url
    raise UsageError(
        f"refusing {what} {safe_text(url)}: it must use https:// (http:// only on 127.0.0.1/localhost)",
        "fix the provider definition or the server's metadata",
    )


def safe_text(value: object, secrets: Iterable[Secret | str | None] = (), limit: int = 200) -> str:
    """Server-provided text made safe for a message: no control characters, no secrets, at most ``limit`` chars."""
    text = _CONTROL.sub(" ", str(value))
    for secret in secrets:
        raw = secret.reveal() if isinstance(secret, Secret) else secret
        if raw and len(raw) >= 4:
            text = text.replace(raw, "***")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def auth_method(client: ClientConfig) -> str:
    """The token-endpoint authentication method: stored with the client, else basic with a secret, else none."""
    method = client.metadata.get("token_endpoint_auth_method")
    if isinstance(method, str) and method in AUTH_METHODS and (method == "none") == (client.client_secret is None):
        return method
    return "none" if client.client_secret is None else "client_secret_basic"


def oauth_client(client: ClientConfig, **kwargs: Any) -> Any:
    """An ``authlib.integrations.httpx_client.OAuth2Client`` for ``client`` (use it as a context manager)."""
    from authlib.integrations.httpx_client import OAuth2Client

    return OAuth2Client(
        client_id=client.client_id,
        client_secret=client.client_secret.reveal() if client.client_secret is not None else None,
        token_endpoint_auth_method=auth_method(client),
        revocation_endpoint_auth_method=auth_method(client),
        timeout=TIMEOUT,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        **kwargs,
    )


@functools.cache
def http_errors() -> tuple[type[Exception], ...]:
    """The transport and status errors of httpx and, when installed, httpx2: authlib's OAuth client runs on httpx2
    when it is there (openai 3 brings it), the plain client on httpx. ``except http_errors()`` catches both."""
    import contextlib
    import importlib

    import httpx

    errors: list[type[Exception]] = [httpx.HTTPError]
    with contextlib.suppress(ImportError):
        errors.append(importlib.import_module("httpx2").HTTPError)
    return tuple(errors)


def plain_client() -> httpx.Client:
    """A plain httpx client (discovery, registration, userinfo) with the same timeout and no redirects."""
    import httpx

    return httpx.Client(timeout=TIMEOUT, follow_redirects=False, headers={"User-Agent": USER_AGENT})


def oauth_error(exc: BaseException) -> tuple[str, str] | None:
    """``(error, description)`` of an authlib OAuthError, cleaned; None when ``exc`` is not one."""
    error = getattr(exc, "error", None)
    if not isinstance(error, str) or not error:
        return None
    return safe_text(error, limit=60), safe_text(getattr(exc, "description", None) or "")


def network_failure(what: str, url: str, exc: BaseException) -> AuthenticationFailed:
    """A login-time network problem as a one-line error naming the host (never the request body)."""
    host = urlsplit(url).netloc or url
    return AuthenticationFailed(
        f"could not reach the {what} at {safe_text(host)} ({type(exc).__name__})",
        "check your network connection and the provider's URLs, then try again",
    )


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object in ``response``; :class:`AuthenticationFailed` for anything else."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, Mapping):
        raise AuthenticationFailed(
            f"the {what} answered HTTP {response.status_code} without a JSON object",
            "check the provider's URLs; the server may be down or not an OAuth server",
        )
    return dict(data)
