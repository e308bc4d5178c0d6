"""flows.discovery: endpoints from the provider JSON, the stored client, or the issuer's metadata (RFC 8414, OIDC)."""

from __future__ import annotations

import pytest
from tests.oauth_server.fixtures import OAuthServer
from tests.unit.flows.conftest import Canned

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows.discovery import Endpoints, discover, resolve_endpoints, well_known_urls
from authsome.models import ClientConfig

ONLY_ISSUER = {
    "authorization_url": None,
    "token_url": None,
    "device_authorization_url": None,
    "revocation_url": None,
    "userinfo_url": None,
}


@pytest.mark.parametrize(
    ("issuer", "rfc8414", "openid"),
    [
        (
            "https://idp.example",
            "https://idp.example/.well-known/oauth-authorization-server",
            "https://idp.example/.well-known/openid-configuration",
        ),
        (
            "https://idp.example/tenant/v2/",
            "https://idp.example/.well-known/oauth-authorization-server/tenant/v2",
            "https://idp.example/tenant/v2/.well-known/openid-configuration",
        ),
    ],
)
def test_well_known_urls_insert_and_append_the_path(issuer: str, rfc8414: str, openid: str) -> None:
    assert well_known_urls(issuer) == (rfc8414, openid)


def test_discover_reads_the_real_servers_metadata(oauth_server: OAuthServer) -> None:
    found = discover(oauth_server.issuer)
    assert found.issuer == oauth_server.issuer
    assert found.authorization == oauth_server.url("/auth") and found.token == oauth_server.url("/token")
    assert found.device_authorization == oauth_server.url("/device/auth")
    assert found.registration == oauth_server.url("/reg")
    assert found.revocation == oauth_server.url("/token/revocation") and found.userinfo == oauth_server.url("/me")


def test_the_provider_json_wins_and_discovery_fills_only_the_gaps(oauth_server: OAuthServer) -> None:
    prov = oauth_server.provider("dcr_pkce", **{**ONLY_ISSUER, "token_url": "http://127.0.0.1:1/own-token"})
    endpoints = resolve_endpoints(prov, "dcr_pkce")
    assert endpoints.token == "http://127.0.0.1:1/own-token"  # from the JSON, not the server's /token
    assert endpoints.authorization == oauth_server.url("/auth") and endpoints.registration == oauth_server.url("/reg")


def test_no_discovery_when_nothing_is_missing(canned: Canned) -> None:
    """Every needed endpoint is in the JSON: the issuer is never asked (the canned server records no request)."""
    from authsome.providers.schema import parse_provider

    prov = parse_provider(
        {
            "schema_version": 1,
            "name": "p",
            "display_name": "P",
            "auth_type": "oauth2",
            "flow": "pkce",
            "oauth": {
                "authorization_url": canned.url("/auth"),
                "token_url": canned.url("/token"),
                "issuer": canned.base,
            },
        }
    )
    assert resolve_endpoints(prov, "pkce").token == canned.url("/token")
    assert canned.requests == []


def test_the_stored_client_supplies_what_was_discovered_before(canned: Canned) -> None:
    from authsome.providers.schema import parse_provider

    prov = parse_provider(
        {
            "schema_version": 1,
            "name": "p",
            "display_name": "P",
            "auth_type": "oauth2",
            "flow": "dcr_pkce",
            "oauth": {"issuer": canned.base},
        }
    )
    meta = Endpoints(issuer=canned.base, authorization=canned.url("/a"), token=canned.url("/t")).to_metadata()
    client = ClientConfig(client_id="registered-before", registered=True, metadata=meta)
    endpoints = resolve_endpoints(prov, "refresh", client=client)
    assert endpoints.token == canned.url("/t") and canned.requests == []


def test_a_document_for_another_issuer_is_refused(canned: Canned) -> None:
    """Mix-up defence (RFC 8414 section 3.3): metadata naming another issuer is not used."""
    other = {"issuer": "https://evil.example", "token_endpoint": "https://evil.example/token"}
    canned.replies["/.well-known/openid-configuration"] = (200, other)
    with pytest.raises(AuthenticationFailed, match="could not discover") as info:
        discover(canned.base)
    assert "issuer 'https://evil.example' differs" in info.value.message
    assert "oauth-authorization-server: HTTP 404" in info.value.message


def test_rfc8414_is_tried_first(canned: Canned) -> None:
    canned.replies["/.well-known/oauth-authorization-server"] = (
        200,
        {"issuer": canned.base, "token_endpoint": canned.url("/t8414")},
    )
    canned.replies["/.well-known/openid-configuration"] = (
        200,
        {"issuer": canned.base, "token_endpoint": canned.url("/toidc")},
    )
    assert discover(canned.base).token == canned.url("/t8414")
    assert [path for _, path, _ in canned.requests] == ["/.well-known/oauth-authorization-server"]


def test_an_insecure_endpoint_in_the_metadata_is_refused(canned: Canned) -> None:
    canned.replies["/.well-known/openid-configuration"] = (
        200,
        {"issuer": canned.base, "token_endpoint": "http://idp.example/token"},
    )
    with pytest.raises(UsageError, match=r"refusing token endpoint http://idp\.example/token"):
        discover(canned.base)


def test_html_instead_of_metadata_is_authentication_failed(canned: Canned) -> None:
    canned.replies["/.well-known/oauth-authorization-server"] = (200, "<html>login</html>")
    with pytest.raises(AuthenticationFailed, match="answered HTTP 200 without a JSON object"):
        discover(canned.base)


def test_an_unreachable_issuer_names_its_host() -> None:
    with pytest.raises(AuthenticationFailed, match=r"could not reach .* at 127\.0\.0\.1:9 \(ConnectError\)"):
        discover("http://127.0.0.1:9")


def test_a_missing_endpoint_without_an_issuer_is_a_usage_error(oauth_server: OAuthServer) -> None:
    prov = oauth_server.provider("pkce", device_authorization_url=None, issuer=None)
    with pytest.raises(UsageError, match="no device authorization endpoint is known"):
        resolve_endpoints(prov, "device_code")  # as with --flow device_code


def test_an_api_key_provider_has_no_oauth_endpoints(api_key_provider: object) -> None:
    prov = api_key_provider()  # type: ignore[operator]
    with pytest.raises(UsageError, match="is not an OAuth provider"):
        resolve_endpoints(prov, "pkce")
