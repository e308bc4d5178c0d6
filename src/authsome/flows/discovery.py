"""Where a provider's OAuth endpoints are: its JSON first, then what its issuer publishes (RFC 8414 / OpenID).

Discovery is used only for endpoints the provider JSON does not name, and only when it names an ``issuer``. Both
well-known documents are tried (RFC 8414 ``/.well-known/oauth-authorization-server`` first, then OpenID's
``/.well-known/openid-configuration``); a document whose ``issuer`` is not the configured issuer is refused (mix-up
defence, RFC 8414 section 3.3). Every endpoint must pass :func:`~authsome.flows.http.require_secure_url`. Endpoints
learnt this way are kept in ``ClientConfig.metadata`` so refresh and revocation need no second look-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows.http import http_errors, json_object, network_failure, plain_client, require_secure_url, safe_text
from authsome.providers.well_known import well_known_urls

if TYPE_CHECKING:
    import httpx

    from authsome.models import ClientConfig
    from authsome.providers.schema import Provider

# Endpoints field -> (provider.oauth attribute, metadata key in RFC 8414 / OpenID discovery)
_FIELDS = {
    "authorization": ("authorization_url", "authorization_endpoint"),
    "token": ("token_url", "token_endpoint"),
    "device_authorization": ("device_authorization_url", "device_authorization_endpoint"),
    "registration": ("registration_endpoint", "registration_endpoint"),
    "revocation": ("revocation_url", "revocation_endpoint"),
    "userinfo": ("userinfo_url", "userinfo_endpoint"),
}
NEEDED = {
    "pkce": ("authorization", "token"),
    "dcr_pkce": ("authorization", "token"),
    "device_code": ("device_authorization", "token"),
    "refresh": ("token",),
}
_WHAT = {
    "authorization": "authorization endpoint",
    "token": "token endpoint",
    "device_authorization": "device authorization endpoint",
    "registration": "registration endpoint",
    "revocation": "revocation endpoint",
    "userinfo": "userinfo endpoint",
}


@dataclass(frozen=True)
class Endpoints:
    """The OAuth endpoints a flow uses (None = unknown)."""

    issuer: str | None = None
    authorization: str | None = None
    token: str | None = None
    device_authorization: str | None = None
    registration: str | None = None
    revocation: str | None = None
    userinfo: str | None = None

    def require(self, name: str) -> str:
        """The endpoint ``name`` (checked https); :class:`UsageError` when unknown."""
        return require_secure_url(getattr(self, name), _WHAT[name])

    def to_metadata(self) -> dict[str, str]:
        """Discovery-style keys for ``ClientConfig.metadata``."""
        out = {"issuer": self.issuer} if self.issuer else {}
        for name, (_, key) in _FIELDS.items():
            value = getattr(self, name)
            if value:
                out[key] = value
        return out


def resolve_endpoints(
    provider: Provider, purpose: str, *, client: ClientConfig | None = None, http: httpx.Client | None = None
) -> Endpoints:
    """Endpoints for ``purpose`` (a flow name or ``refresh``): provider JSON, then the stored client, then discovery."""
    oauth = provider.oauth
    if oauth is None:
        raise UsageError(f"{provider.display_name} is not an OAuth provider", "use `authsome login` without --flow")
    stored: Mapping[str, Any] = client.metadata if client is not None else {}
    values: dict[str, str | None] = {"issuer": oauth.issuer}
    for name, (attr, key) in _FIELDS.items():
        from_stored = stored.get(key)
        values[name] = getattr(oauth, attr) or (from_stored if isinstance(from_stored, str) else None)
    endpoints = Endpoints(**values)
    needed = NEEDED.get(purpose, ())
    if purpose == "dcr_pkce" and (client is None or not client.client_id):
        needed = (*needed, "registration")
    if any(getattr(endpoints, n) is None for n in needed) and oauth.issuer:
        found = discover(oauth.issuer, http)
        endpoints = replace(
            endpoints,
            **{
                f.name: getattr(endpoints, f.name) or getattr(found, f.name)
                for f in fields(Endpoints)
                if f.name != "issuer"
            },
        )
    for name in needed:
        endpoints.require(name)
    return endpoints


def discover(issuer: str, http: httpx.Client | None = None) -> Endpoints:
    """Fetch the issuer's metadata; :class:`AuthenticationFailed` when neither document is usable."""

    require_secure_url(issuer, "issuer")
    own = http is None
    client = plain_client() if http is None else http
    problems: list[str] = []
    try:
        for url in well_known_urls(issuer):
            try:
                response = client.get(url, headers={"Accept": "application/json"})
            except http_errors() as exc:
                raise network_failure("authorization server metadata", url, exc) from None
            if response.status_code != 200:
                problems.append(f"{urlsplit(url).path}: HTTP {response.status_code}")
                continue
            data = json_object(response, "authorization server metadata")
            if str(data.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
                problems.append(f"{urlsplit(url).path}: issuer {safe_text(data.get('issuer'), limit=80)!r} differs")
                continue
            return _from_metadata(issuer, data)
    finally:
        if own:
            client.close()
    raise AuthenticationFailed(
        f"could not discover the OAuth endpoints of {safe_text(issuer)} ({'; '.join(problems)})",
        "add the endpoint URLs to the provider definition or check oauth.issuer",
    )


def _from_metadata(issuer: str, data: Mapping[str, Any]) -> Endpoints:
    values: dict[str, str | None] = {"issuer": issuer}
    for name, (_, key) in _FIELDS.items():
        value = data.get(key)
        values[name] = require_secure_url(value, _WHAT[name]) if isinstance(value, str) and value else None
    return Endpoints(**values)
