"""Dynamic client registration (RFC 7591): authsome registers itself as a public native client with PKCE.

The registration asks for ``token_endpoint_auth_method: none`` and a loopback redirect URI; if the server issues a
secret anyway, it is kept (encrypted by the store) together with the method the server chose. The registered client
is returned to the api layer, which stores it; a later login reuses it (see :func:`reusable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from authsome.errors import AuthenticationFailed
from authsome.flows.client import check_client_id, check_client_secret
from authsome.flows.http import AUTH_METHODS, http_errors, json_object, network_failure, plain_client, safe_text
from authsome.models import ClientConfig

if TYPE_CHECKING:
    import httpx

    from authsome.flows.discovery import Endpoints

CLIENT_NAME = "authsome"


def register(
    endpoints: Endpoints,
    *,
    redirect_uri: str,
    scopes: Sequence[str] = (),
    http: httpx.Client | None = None,
) -> ClientConfig:
    """Register a client at ``endpoints.registration`` and return it (with the endpoints in its metadata)."""

    url = endpoints.require("registration")
    body: dict[str, object] = {
        "client_name": CLIENT_NAME,
        "application_type": "native",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    if scopes:
        body["scope"] = " ".join(scopes)
    own = http is None
    client = plain_client() if http is None else http
    try:
        response = client.post(url, json=body, headers={"Accept": "application/json"})
    except http_errors() as exc:
        raise network_failure("registration endpoint", url, exc) from None
    finally:
        if own:
            client.close()
    data = json_object(response, "registration endpoint")
    if response.status_code not in (200, 201) or "error" in data:
        error = safe_text(data.get("error", f"HTTP {response.status_code}"), limit=60)
        description = safe_text(data.get("error_description", ""))
        raise AuthenticationFailed(
            f"dynamic client registration was refused: {error}" + (f" ({description})" if description else ""),
            "register an OAuth app by hand and pass --client-id, or check the provider's registration settings",
        )
    client_id = check_client_id(str(data.get("client_id", "")), "the registration response")
    raw_secret = data.get("client_secret")
    secret = check_client_secret(raw_secret, "the registration response") if isinstance(raw_secret, str) else None
    method = data.get("token_endpoint_auth_method")
    if not isinstance(method, str) or method not in AUTH_METHODS:
        method = "none" if secret is None else "client_secret_basic"
    metadata: dict[str, object] = {**endpoints.to_metadata(), "token_endpoint_auth_method": method}
    return ClientConfig(
        client_id=client_id, client_secret=secret, registered=True, redirect_uri=redirect_uri, metadata=metadata
    )


def reusable(client: ClientConfig | None, redirect_uri: str) -> bool:
    """Whether a stored registered client fits ``redirect_uri`` (a loopback port may differ: RFC 8252 section 7.3)."""
    if client is None:
        return False
    if not client.registered or not client.redirect_uri:
        return True
    old, new = urlsplit(client.redirect_uri), urlsplit(redirect_uri)
    return (old.scheme, old.hostname, old.path) == (new.scheme, new.hostname, new.path)
