"""flows.pkce: authorization code + PKCE with a one-shot loopback redirect, signed in over plain HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tests.oauth_server.fixtures import CONFIDENTIAL_CLIENT, PUBLIC_CLIENT, OAuthServer
from tests.oauth_server.harness import QueueUI, in_background
from tests.unit.flows.idp import sign_in

from authsome.errors import AuthenticationFailed
from authsome.flows import pkce
from authsome.flows.discovery import Endpoints
from authsome.models import ClientConfig
from authsome.secret import Secret

SCOPES = ("openid", "email", "offline_access")


def endpoints_of(server: OAuthServer, **changes: Any) -> Endpoints:
    values = {"issuer": server.issuer, "authorization": server.url("/auth"), "token": server.url("/token"), **changes}
    return Endpoints(**values)


def start(server: OAuthServer, client: ClientConfig | None = None, **kwargs: Any) -> tuple[Any, QueueUI]:
    ui = QueueUI()
    used = client or ClientConfig(client_id=PUBLIC_CLIENT)
    kwargs.setdefault("endpoints", endpoints_of(server))
    future = in_background(
        pkce.authorize,
        display_name="Test IdP",
        get_client=lambda redirect_uri: used,
        scopes=SCOPES,
        ui=ui,
        redirect_port=0,
        **kwargs,
    )
    return future, ui


def test_sign_in_and_code_exchange(oauth_server: OAuthServer) -> None:
    future, ui = start(oauth_server)
    url = ui.urls.get(timeout=15)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"][0].startswith("http://127.0.0.1:") and query["redirect_uri"][0].endswith("/callback")
    assert "code_verifier" not in query and len(query["state"][0]) >= 32
    landing = sign_in(url, "frank")
    assert landing.status_code == 200 and "authsome received the authorization for Test IdP" in landing.text
    token, client = future.result(30)
    assert client.client_id == PUBLIC_CLIENT and oauth_server.introspect(token["access_token"])["sub"] == "frank"
    with pytest.raises(httpx.ConnectError):  # the one-shot listener is gone
        httpx.get(query["redirect_uri"][0])


def test_a_redirect_with_another_state_is_ignored_and_the_real_one_still_counts(oauth_server: OAuthServer) -> None:
    future, ui = start(oauth_server)
    url = ui.urls.get(timeout=15)
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    forged = httpx.get(redirect_uri, params={"code": "attacker-code", "state": "not-the-state"})
    assert forged.status_code == 400 and not future.done()
    assert "wrong or missing state" in ui.text
    sign_in(url)
    assert future.result(30)[0]["access_token"]


def test_a_denied_consent(oauth_server: OAuthServer) -> None:
    future, ui = start(oauth_server)
    page = sign_in(ui.urls.get(timeout=15), deny=True)
    assert "Sign-in failed" in page.text
    with pytest.raises(AuthenticationFailed, match="the sign-in to Test IdP was denied"):
        future.result(30)


def test_a_response_from_another_issuer_is_refused(oauth_server: OAuthServer) -> None:
    """RFC 9207: the server names itself in ``iss``; a login configured for another issuer refuses the answer."""
    future, ui = start(oauth_server, endpoints=endpoints_of(oauth_server, issuer="http://127.0.0.1:1"))
    sign_in(ui.urls.get(timeout=15))
    with pytest.raises(AuthenticationFailed, match="the sign-in response came from issuer"):
        future.result(30)


def test_a_wrong_client_secret_fails_at_the_exchange_without_showing_it(oauth_server: OAuthServer) -> None:
    wrong = ClientConfig(client_id=CONFIDENTIAL_CLIENT, client_secret=Secret("wrong-secret-value"))
    future, ui = start(oauth_server, client=wrong)
    sign_in(ui.urls.get(timeout=15))
    with pytest.raises(AuthenticationFailed, match="Test IdP refused the authorization code: invalid_client") as info:
        future.result(30)
    assert "wrong-secret-value" not in str(info.value)


def test_nobody_signs_in(oauth_server: OAuthServer) -> None:
    future, ui = start(oauth_server, timeout=1)
    ui.urls.get(timeout=15)
    with pytest.raises(AuthenticationFailed, match="did not finish within 1 seconds"):
        future.result(30)


def test_without_a_browser_the_url_is_printed(oauth_server: OAuthServer) -> None:
    future, ui = start(oauth_server, no_browser=True, timeout=1)
    with pytest.raises(AuthenticationFailed):
        future.result(30)
    assert ui.urls.empty() and "Open this URL to sign in to Test IdP:\nhttp://127.0.0.1:" in ui.text


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("http://127.0.0.1:7999/callback?code=c1&state=s1", {"code": "c1", "state": "s1"}),
        ("?code=c2&state=s2", {"code": "c2", "state": "s2"}),
        ("error=access_denied&state=s3", {"error": "access_denied", "state": "s3"}),
        ("  bare-code  ", {"code": "bare-code", "state": "STATE"}),
    ],
)
def test_pasted_answers(pasted: str, expected: dict[str, str]) -> None:
    request = pkce.pasted_request(pasted, "STATE")
    assert request is not None and request.path == pkce.CALLBACK_PATH and request.query == expected


def test_a_blank_paste_is_nothing() -> None:
    assert pkce.pasted_request("  ", "STATE") is None
