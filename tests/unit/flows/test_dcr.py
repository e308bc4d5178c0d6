"""flows.dcr: dynamic client registration (RFC 7591) at the real server, odd answers, and when a client is reused."""

from __future__ import annotations

import json

import pytest
from tests.oauth_server.fixtures import OAuthServer
from tests.unit.flows.conftest import Canned

from authsome.errors import AuthenticationFailed
from authsome.flows.dcr import register, reusable
from authsome.flows.discovery import Endpoints
from authsome.models import ClientConfig
from authsome.secret import Secret

REDIRECT = "http://127.0.0.1:7999/callback"


def endpoints_of(server: OAuthServer) -> Endpoints:
    return Endpoints(
        issuer=server.issuer,
        authorization=server.url("/auth"),
        token=server.url("/token"),
        registration=server.url("/reg"),
    )


def test_register_at_the_real_server_as_a_public_native_client(oauth_server: OAuthServer) -> None:
    client = register(endpoints_of(oauth_server), redirect_uri=REDIRECT, scopes=["openid", "offline_access"])
    assert client.client_id and client.client_secret is None and client.registered
    assert client.redirect_uri == REDIRECT
    assert client.metadata["token_endpoint_auth_method"] == "none"
    assert client.metadata["token_endpoint"] == oauth_server.url("/token")  # endpoints kept for refresh later
    again = register(endpoints_of(oauth_server), redirect_uri=REDIRECT)
    assert again.client_id != client.client_id  # each registration is a new client at the server


def test_a_refused_registration_says_why(oauth_server: OAuthServer) -> None:
    with pytest.raises(AuthenticationFailed, match="dynamic client registration was refused: invalid_redirect_uri"):
        register(endpoints_of(oauth_server), redirect_uri="http://example.test/callback")  # not loopback: refused


def test_a_secret_the_server_issues_anyway_is_kept_with_its_method(canned: Canned) -> None:
    canned.replies["/reg"] = (
        201,
        {
            "client_id": "c-1",
            "client_secret": "issued-secret-value",
            "token_endpoint_auth_method": "client_secret_post",
        },
    )
    client = register(Endpoints(registration=canned.url("/reg")), redirect_uri=REDIRECT, scopes=["a", "b"])
    assert client.client_secret == Secret("issued-secret-value")
    assert client.metadata["token_endpoint_auth_method"] == "client_secret_post"
    body = json.loads(canned.requests[0][2])
    assert body["token_endpoint_auth_method"] == "none" and body["redirect_uris"] == [REDIRECT]
    assert body["scope"] == "a b" and body["application_type"] == "native"


def test_an_unknown_method_falls_back_to_what_the_secret_allows(canned: Canned) -> None:
    canned.replies["/reg"] = (200, {"client_id": "c-2", "token_endpoint_auth_method": "tls_client_auth"})
    assert (
        register(Endpoints(registration=canned.url("/reg")), redirect_uri=REDIRECT).metadata[
            "token_endpoint_auth_method"
        ]
        == "none"
    )


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            (400, {"error": "invalid_client_metadata", "error_description": "no\x1b[31m"}),
            "refused: invalid_client_metadata \\(no",
        ),
        ((500, "<html>oops</html>"), "answered HTTP 500 without a JSON object"),
        ((403, {"message": "forbidden"}), "refused: HTTP 403"),
    ],
)
def test_server_errors(canned: Canned, reply: tuple[int, object], message: str) -> None:
    canned.replies["/reg"] = reply
    with pytest.raises(AuthenticationFailed, match=message) as info:
        register(Endpoints(registration=canned.url("/reg")), redirect_uri=REDIRECT)
    assert "\x1b" not in str(info.value)


def test_an_unreachable_registration_endpoint() -> None:
    with pytest.raises(AuthenticationFailed, match=r"could not reach the registration endpoint at 127\.0\.0\.1:9"):
        register(Endpoints(registration="http://127.0.0.1:9/reg"), redirect_uri=REDIRECT)


def test_reusable_ignores_only_the_loopback_port() -> None:
    registered = ClientConfig(client_id="c", registered=True, redirect_uri=REDIRECT)
    assert reusable(registered, "http://127.0.0.1:40000/callback")  # RFC 8252 section 7.3
    assert not reusable(registered, "http://localhost:7999/callback")
    assert not reusable(registered, "http://127.0.0.1:7999/other")
    assert reusable(ClientConfig(client_id="by-hand"), "http://127.0.0.1:1/x")  # not registered by authsome
    assert not reusable(None, REDIRECT)
