"""flows.tokens: token responses checked and turned into credentials; the account label from claims or userinfo."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from tests.oauth_server.fixtures import OAuthServer
from tests.unit.flows.idp import fresh_tokens

from authsome.errors import AuthenticationFailed, RefreshFailed
from authsome.flows.http import plain_client
from authsome.flows.tokens import (
    MAX_LIFETIME,
    account_label,
    credential_from_response,
    id_token_claims,
    label_from_claims,
    missing_scopes,
    parse_scopes,
    userinfo,
    with_account,
)
from authsome.models import Credential
from authsome.secret import Secret

NOW = 1_000_000.0


def jwt(claims: dict[str, Any]) -> Secret:
    """An unsigned JWT-shaped token (the label never depends on the signature)."""
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return Secret(f"eyJhbGciOiJub25lIn0.{part}.sig")


def test_parse_scopes_accepts_spaces_commas_and_lists() -> None:
    assert parse_scopes("repo  read:org,repo") == ("repo", "read:org")
    assert parse_scopes(["a", " b ", "", "a"]) == ("a", "b")
    assert parse_scopes(None) == ()


def test_a_full_response_becomes_a_bearer_credential() -> None:
    data = {
        "access_token": "at-1",
        "refresh_token": "rt-1",
        "id_token": "it-1",
        "token_type": "bearer",
        "expires_in": "3600",
        "scope": "openid email",
    }
    cred = credential_from_response(data, requested_scopes=["openid"], now=NOW, metadata={"flow": "pkce"})
    assert cred.kind == "oauth2" and cred.token_type == "Bearer"
    assert cred.access_token == Secret("at-1") and cred.refresh_token == Secret("rt-1")
    assert cred.expires_at == NOW + 3600 and cred.metadata == {"flow": "pkce", "expires_in": 3600.0}
    assert cred.scopes == ("openid", "email")


def test_what_the_server_omits() -> None:
    cred = credential_from_response({"access_token": "at"}, requested_scopes=["a", "b"], now=NOW)
    assert cred.token_type == "Bearer" and cred.expires_at is None and cred.refresh_token is None
    assert cred.scopes == ("a", "b")  # no scope in the answer: what was asked (RFC 6749 section 5.1)


def test_a_refresh_keeps_what_the_server_did_not_send_again() -> None:
    previous = Credential(
        kind="oauth2",
        access_token=Secret("old"),
        refresh_token=Secret("rt-old"),
        id_token=Secret("it-old"),
        scopes=("s1",),
        account="alice",
        metadata={"flow": "device_code", "expires_in": 60},
    )
    cred = credential_from_response(
        {"access_token": "new", "expires_in": 7200}, requested_scopes=[], now=NOW, previous=previous
    )
    assert cred.refresh_token == Secret("rt-old") and cred.id_token == Secret("it-old")
    assert cred.scopes == ("s1",) and cred.account == "alice"
    assert cred.metadata == {"flow": "device_code", "expires_in": 7200.0}
    rotated = credential_from_response(
        {"access_token": "new", "refresh_token": "rt-new"}, requested_scopes=[], now=NOW, previous=previous
    )
    assert rotated.refresh_token == Secret("rt-new") and "expires_in" not in rotated.metadata


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "has no access_token"),
        ({"access_token": ""}, "invalid access_token"),
        ({"access_token": "has space"}, "invalid access_token"),
        ({"access_token": "x" * (64 * 1024 + 1)}, "invalid access_token"),
        ({"access_token": 42}, "invalid access_token"),
        ({"access_token": "at", "refresh_token": "bad\ntoken"}, "invalid refresh_token"),
        ({"access_token": "at", "token_type": "MAC"}, "'MAC' token; authsome can only use Bearer"),
        ({"access_token": "at", "expires_in": 0}, "invalid expires_in"),
        ({"access_token": "at", "expires_in": "soon"}, "invalid expires_in"),
        ({"access_token": "at", "expires_in": True}, "invalid expires_in"),
        ({"access_token": "at", "expires_in": MAX_LIFETIME + 1}, "invalid expires_in"),
    ],
)
def test_bad_responses_are_refused_without_the_token(data: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthenticationFailed, match=message) as info:
        credential_from_response(data, requested_scopes=[], now=NOW)
    assert "has space" not in str(info.value) and "bad\ntoken" not in str(info.value)


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(RefreshFailed):
        credential_from_response({}, requested_scopes=[], now=NOW, error=RefreshFailed)


def test_missing_scopes_in_the_order_asked() -> None:
    assert missing_scopes(["c", "a", "b"], ["a"]) == ("c", "b")


def test_id_token_claims_decode_without_verification_and_tolerate_junk() -> None:
    assert id_token_claims(jwt({"email": "a@b.test"})) == {"email": "a@b.test"}
    for junk in ("not-a-jwt", "a.!!!.c", "a.bm90IGpzb24.c", f"a.{base64.urlsafe_b64encode(b'[1]').decode()}.c"):
        assert id_token_claims(Secret(junk)) == {}
    assert id_token_claims(None) == {}


def test_label_prefers_a_human_claim_then_userinfo_then_the_subject() -> None:
    assert label_from_claims({"sub": "u1", "email": " a@b.test ", "name": "A"}) == "a@b.test"
    assert label_from_claims({"login": 12345}) == "12345"  # GitHub ids are numbers
    assert label_from_claims({"email": "x\x00y", "name": "ok"}) == "ok"  # unprintable skipped
    assert label_from_claims({"email": True}) is None
    cred = Credential(kind="oauth2", access_token=Secret("at"), id_token=jwt({"sub": "subject-1"}))
    assert account_label(cred) == "subject-1"
    assert account_label(cred, userinfo_claims={"login": "octocat"}) == "octocat"
    assert account_label(Credential(kind="oauth2"), userinfo_claims={"id": 7}) == "7"
    assert with_account(cred, "alice").account == "alice" and with_account(cred, None) is cred


def test_userinfo_from_the_real_server(oauth_server: OAuthServer) -> None:
    tokens = fresh_tokens(oauth_server, login="carol")
    with plain_client() as http:
        claims = userinfo(http, oauth_server.url("/me"), Secret(tokens["access_token"]))
        assert claims["sub"] == "carol" and claims["email"] == "carol@example.test"
        assert userinfo(http, oauth_server.url("/me"), Secret("not-a-valid-token")) == {}  # 401: no claims
        assert userinfo(http, "http://127.0.0.1:9/me", Secret("x")) == {}  # nothing listening
    cred = credential_from_response(tokens, requested_scopes=[], now=NOW)
    assert account_label(cred) == "carol"  # the real ID token carries only the subject
