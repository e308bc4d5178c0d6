"""flows.refresh: when to refresh, refreshing and revoking at the real server, and every way the server can say no."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.oauth_server.fixtures import PUBLIC_CLIENT, OAuthServer
from tests.unit.flows.conftest import Canned
from tests.unit.flows.idp import fresh_tokens

from authsome.errors import AuthsomeError
from authsome.flows.refresh import TokenRefreshFailed, needs_refresh, refresh, refresh_window, revoke
from authsome.flows.tokens import credential_from_response
from authsome.models import ClientConfig, Credential
from authsome.providers.schema import Provider, parse_provider
from authsome.secret import Secret

PUBLIC = ClientConfig(client_id=PUBLIC_CLIENT)


def logged_in(server: OAuthServer, login: str = "erin") -> Credential:
    tokens = fresh_tokens(server, login)
    cred = credential_from_response(tokens, requested_scopes=[], now=time.time(), metadata={"flow": "device_code"})
    return Credential(**{**cred.__dict__, "account": login})


def provider_at(base: str, **oauth: Any) -> Provider:
    block = {"token_url": base + "/token", "device_authorization_url": base + "/device", **oauth}
    return parse_provider(
        {
            "schema_version": 1,
            "name": "odd",
            "display_name": "Odd IdP",
            "auth_type": "oauth2",
            "flow": "device_code",
            "oauth": block,
        }
    )


def oauth_cred(expires_in: float | None = 3600, now: float = 1000.0) -> Credential:
    meta = {"expires_in": expires_in} if expires_in else {}
    return Credential(
        kind="oauth2",
        access_token=Secret("at-old-value"),
        refresh_token=Secret("rt-old-value"),
        expires_at=now + (expires_in or 3600),
        metadata=meta,
    )


@pytest.mark.parametrize(
    ("lifetime", "window"), [(3600, 300), (300, 30), (4, 2), (20, 5), (None, 300), (-1, 300), (True, 300)]
)
def test_refresh_window(lifetime: Any, window: float) -> None:
    cred = Credential(kind="oauth2", metadata={"expires_in": lifetime} if lifetime is not None else {})
    assert refresh_window(cred) == window


def test_needs_refresh_inside_the_window_only() -> None:
    cred = oauth_cred(3600, now=0)
    assert not needs_refresh(cred, now=3600 - 301)
    assert needs_refresh(cred, now=3600 - 300) and needs_refresh(cred, now=4000)
    assert not needs_refresh(Credential(kind="oauth2", access_token=Secret("a")))  # never expires
    assert not needs_refresh(Credential(kind="api_key", api_key=Secret("k"), expires_at=0), now=10)


def test_refresh_at_the_real_server_rotates_and_keeps_the_account(oauth_server: OAuthServer) -> None:
    prov = oauth_server.provider("device_code")
    old = logged_in(oauth_server)
    fresh = refresh(prov, PUBLIC, old)
    assert fresh.access_token != old.access_token and fresh.refresh_token != old.refresh_token  # rotated
    assert fresh.account == "erin" and fresh.metadata["flow"] == "device_code"
    assert fresh.expires_at is not None and fresh.expires_at > time.time() + 3000
    assert fresh.access_token is not None and oauth_server.introspect(fresh.access_token.reveal())["active"]


def test_a_rotated_away_refresh_token_is_invalid_grant(oauth_server: OAuthServer) -> None:
    prov = oauth_server.provider("device_code")
    old = logged_in(oauth_server)
    refresh(prov, PUBLIC, old)
    with pytest.raises(TokenRefreshFailed, match="Test IdP rejected the refresh token \\(invalid_grant") as info:
        refresh(prov, PUBLIC, old)  # the server rotated it: using it again is refused
    assert info.value.invalid_grant
    assert old.refresh_token is not None and old.refresh_token.reveal() not in str(info.value)
    assert info.value.hint == "run `authsome login testidp --force`"


def test_no_refresh_token() -> None:
    cred = Credential(kind="oauth2", access_token=Secret("a"), expires_at=0)
    with pytest.raises(TokenRefreshFailed, match="expired and there is no refresh token"):
        refresh(provider_at("http://127.0.0.1:9"), PUBLIC, cred)


def test_an_unreachable_token_endpoint_may_pass() -> None:
    with pytest.raises(TokenRefreshFailed, match="could not reach the Odd IdP token endpoint") as info:
        refresh(provider_at("http://127.0.0.1:9"), PUBLIC, oauth_cred())
    assert not info.value.invalid_grant


@pytest.mark.parametrize(
    ("reply", "message", "invalid_grant"),
    [
        ((200, "<html>maintenance</html>"), "did not answer the refresh with JSON", False),
        ((400, {"error": "invalid_client"}), "Odd IdP refused to refresh the token \\(invalid_client\\)", False),
        (
            (400, {"error": "invalid_grant", "error_description": "rt-old-value was revoked"}),
            "rejected the refresh token \\(invalid_grant: \\*\\*\\* was revoked\\)",
            True,
        ),
        ((200, {"access_token": "bad token"}), "invalid access_token", False),
    ],
)
def test_odd_answers(canned: Canned, reply: tuple[int, Any], message: str, invalid_grant: bool) -> None:
    canned.replies["/token"] = reply
    with pytest.raises(TokenRefreshFailed, match=message) as info:
        refresh(provider_at(canned.base), PUBLIC, oauth_cred())
    assert info.value.invalid_grant is invalid_grant
    assert "rt-old-value" not in str(info.value)


def test_revoke_at_the_real_server(oauth_server: OAuthServer) -> None:
    cred = logged_in(oauth_server)
    assert cred.access_token is not None and cred.refresh_token is not None
    assert oauth_server.introspect(cred.access_token.reveal())["active"]
    assert revoke(oauth_server.provider("device_code"), PUBLIC, cred) is True
    assert not oauth_server.introspect(cred.access_token.reveal())["active"]
    assert not oauth_server.introspect(cred.refresh_token.reveal())["active"]


def test_revoke_finds_the_endpoint_by_discovery(oauth_server: OAuthServer) -> None:
    cred = logged_in(oauth_server)
    assert revoke(oauth_server.provider("device_code", revocation_url=None), PUBLIC, cred) is True
    assert cred.access_token is not None and not oauth_server.introspect(cred.access_token.reveal())["active"]


def test_nothing_to_revoke_without_an_endpoint_or_for_an_api_key(canned: Canned) -> None:
    assert revoke(provider_at(canned.base), PUBLIC, oauth_cred()) is False
    assert (
        revoke(
            provider_at(canned.base, revocation_url=canned.url("/revoke")),
            PUBLIC,
            Credential(kind="api_key", api_key=Secret("k")),
        )
        is False
    )
    assert canned.requests == []  # nothing was sent


def test_revoke_skips_a_token_type_the_server_cannot_revoke(canned: Canned) -> None:
    canned.replies["/revoke"] = [(400, {"error": "unsupported_token_type"}), (200, {})]
    assert revoke(provider_at(canned.base, revocation_url=canned.url("/revoke")), PUBLIC, oauth_cred()) is True
    bodies = [body for _, _, body in canned.requests]
    assert b"token_type_hint=refresh_token" in bodies[0] and b"token_type_hint=access_token" in bodies[1]


def test_a_refused_or_unreachable_revocation_is_an_error() -> None:
    with pytest.raises(AuthsomeError, match="could not reach the Odd IdP revocation endpoint") as info:
        revoke(provider_at("http://127.0.0.1:9", revocation_url="http://127.0.0.1:9/revoke"), PUBLIC, oauth_cred())
    assert info.value.hint is not None and "authsome remove odd" in info.value.hint


def test_a_refused_revocation_names_the_token(canned: Canned) -> None:
    canned.replies["/revoke"] = (401, {"error": "invalid_client"})
    refused = r"Odd IdP refused to revoke the refresh token \(HTTP 401, invalid_client\)"
    with pytest.raises(AuthsomeError, match=refused):
        revoke(provider_at(canned.base, revocation_url=canned.url("/revoke")), PUBLIC, oauth_cred())
