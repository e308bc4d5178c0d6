"""An issuer's discovery URLs are built in one place, and the proxy protects the ones login actually fetches."""

from __future__ import annotations

import pytest

from authsome.flows import discovery
from authsome.providers.schema import parse_provider
from authsome.providers.well_known import well_known_urls

ISSUERS = [
    (
        "https://id.forge.test",
        "https://id.forge.test/.well-known/oauth-authorization-server",
        "https://id.forge.test/.well-known/openid-configuration",
    ),
    (
        "https://id.forge.test/",
        "https://id.forge.test/.well-known/oauth-authorization-server",
        "https://id.forge.test/.well-known/openid-configuration",
    ),
    (  # RFC 8414 section 3.1 inserts the well-known part before the path; OpenID appends it
        "https://id.forge.test/tenant/v2",
        "https://id.forge.test/.well-known/oauth-authorization-server/tenant/v2",
        "https://id.forge.test/tenant/v2/.well-known/openid-configuration",
    ),
    (
        "https://id.forge.test/tenant/v2/",
        "https://id.forge.test/.well-known/oauth-authorization-server/tenant/v2",
        "https://id.forge.test/tenant/v2/.well-known/openid-configuration",
    ),
]


@pytest.mark.parametrize(("issuer", "rfc8414", "openid"), ISSUERS)
def test_well_known_urls(issuer: str, rfc8414: str, openid: str) -> None:
    assert well_known_urls(issuer) == (rfc8414, openid)


def test_login_discovery_uses_the_same_function() -> None:
    assert discovery.well_known_urls is well_known_urls


@pytest.mark.parametrize(("issuer", "rfc8414", "openid"), ISSUERS)
def test_the_documents_login_fetches_never_get_a_credential(issuer: str, rfc8414: str, openid: str) -> None:
    provider = parse_provider(
        {
            "name": "forge",
            "auth_type": "oauth2",
            "flow": "dcr_pkce",
            "oauth": {"issuer": issuer},
            "host_url": "id.forge.test",  # the API is served on the issuer's host too
        }
    )
    for url in (rfc8414, openid):
        path = url.removeprefix("https://id.forge.test")
        assert provider.is_oauth_endpoint("id.forge.test", 443, path), url
    if issuer.rstrip("/").endswith("/v2"):  # an API path that merely ends like a discovery URL is still the API
        assert not provider.is_oauth_endpoint("id.forge.test", 443, "/tenant/v2/.well-known/oauth-authorization-server")
