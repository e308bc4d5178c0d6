"""Authorization code + PKCE against the real oidc-provider, with Chromium clicking its login and consent pages."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from authsome.errors import AuthenticationFailed
from authsome.flows.pkce import DEFAULT_REDIRECT_PORT
from oauth_server.fixtures import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, PUBLIC_CLIENT, OAuthServer, approve, deny
from oauth_server.harness import LoginRun, QueueUI

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_pkce_login_end_to_end(oauth_server: OAuthServer, page: Page) -> None:
    run = LoginRun(
        QueueUI(), provider=oauth_server.provider("pkce"), client=None, client_id=PUBLIC_CLIENT, redirect_port=0
    )
    url = run.url()
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert "code_verifier" not in query and query["client_id"] == [PUBLIC_CLIENT]
    redirect = urlsplit(query["redirect_uri"][0])
    assert redirect.hostname == "127.0.0.1" and redirect.path == "/callback"
    approve(page, url, "alice")
    assert "Signed in" in page.content()
    cred, client = run.result()

    assert cred.kind == "oauth2" and cred.token_type == "Bearer"
    assert cred.access_token and cred.refresh_token and cred.id_token
    assert cred.expires_at is not None and 3500 < cred.expires_at - time.time() <= 3600
    assert set(cred.scopes) >= {"openid", "email"}  # offline access shows as the refresh token above
    assert cred.account == "alice@example.test"  # from the userinfo endpoint
    assert cred.metadata["flow"] == "pkce"
    assert client.client_id == PUBLIC_CLIENT and client.client_secret is None
    assert client.metadata["token_endpoint"] == oauth_server.url("/token")
    seen = oauth_server.introspect(cred.access_token.reveal())
    assert seen["active"] is True and seen["client_id"] == PUBLIC_CLIENT and seen["sub"] == "alice"
    assert redirect.port is not None and _port_closed(redirect.port)  # the listener is gone


def test_account_label_falls_back_to_the_id_token_subject(
    oauth_server: OAuthServer, pkce_login: Callable[..., Any]
) -> None:
    cred, _ = pkce_login(login="bob", provider=oauth_server.provider("pkce", userinfo_url=None))
    assert cred.account == "bob"


def test_confidential_client_secret_comes_from_the_environment(
    oauth_server: OAuthServer, pkce_login: Callable[..., Any]
) -> None:
    env = {"TESTIDP_CLIENT_ID": CONFIDENTIAL_CLIENT, "TESTIDP_CLIENT_SECRET": CONFIDENTIAL_SECRET}
    cred, client = pkce_login(client_id=None, env=env, provider=oauth_server.provider("pkce", confidential=True))
    assert client.client_id == CONFIDENTIAL_CLIENT
    assert client.client_secret is not None and client.client_secret.reveal() == CONFIDENTIAL_SECRET
    assert oauth_server.introspect(cred.access_token.reveal())["client_id"] == CONFIDENTIAL_CLIENT


def test_wrong_client_secret_fails_without_echoing_it(oauth_server: OAuthServer, page: Page) -> None:
    env = {"TESTIDP_CLIENT_ID": CONFIDENTIAL_CLIENT, "TESTIDP_CLIENT_SECRET": "not-the-right-secret"}
    provider = oauth_server.provider("pkce", confidential=True)
    run = LoginRun(QueueUI(), provider=provider, client=None, env=env, redirect_port=0)
    approve(page, run.url())
    with pytest.raises(AuthenticationFailed, match="refused the authorization code: invalid_client") as info:
        run.result()
    assert "not-the-right-secret" not in str(info.value)


def test_state_mismatch_is_refused_and_the_real_redirect_still_works(oauth_server: OAuthServer, page: Page) -> None:
    run = LoginRun(
        QueueUI(), provider=oauth_server.provider("pkce"), client=None, client_id=PUBLIC_CLIENT, redirect_port=0
    )
    url = run.url()
    callback = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    forged = httpx.get(callback, params={"code": "attacker-code", "state": "forged-state"})
    missing = httpx.get(callback, params={"code": "attacker-code"})
    assert forged.status_code == 400 and missing.status_code == 400
    assert "does not belong to the login" in forged.text
    assert not run.future.done()
    approve(page, url)
    cred, _ = run.result()
    assert oauth_server.introspect(cred.access_token.reveal())["active"] is True
    assert "wrong or missing state" in run.ui.text


def test_only_a_forged_redirect_means_the_login_times_out(oauth_server: OAuthServer) -> None:
    run = LoginRun(
        QueueUI(),
        provider=oauth_server.provider("pkce"),
        client=None,
        client_id=PUBLIC_CLIENT,
        redirect_port=0,
        timeout=2,
    )
    callback = parse_qs(urlsplit(run.url()).query)["redirect_uri"][0]
    assert httpx.get(callback, params={"code": "attacker-code", "state": "nope"}).status_code == 400
    with pytest.raises(AuthenticationFailed, match="did not finish within 2 seconds"):
        run.result()


def test_denied_consent_is_authentication_failed(oauth_server: OAuthServer, page: Page) -> None:
    run = LoginRun(
        QueueUI(), provider=oauth_server.provider("pkce"), client=None, client_id=PUBLIC_CLIENT, redirect_port=0
    )
    deny(page, run.url())
    with pytest.raises(AuthenticationFailed, match="was denied") as info:
        run.result()
    assert info.value.exit_code == 4
    assert "Sign-in failed" in page.content()


class TerminalUI(QueueUI):
    """A user at a terminal: Enter at the client-secret prompt (a public client), pasted answers from the test."""

    def prompt_secret(self, label: str) -> str:
        self.messages.append(f"[secret prompt] {label}")
        return ""


def test_paste_the_url_when_the_browser_cannot_reach_the_listener(oauth_server: OAuthServer, page: Page) -> None:
    ui = TerminalUI(opens_browser=False, interactive=True)
    run = LoginRun(
        ui,
        provider=oauth_server.provider("pkce"),
        client=None,
        client_id=PUBLIC_CLIENT,
        redirect_port=0,
        no_browser=True,
    )
    for _ in range(100):
        match = re.search(r"^(http://127\.0\.0\.1:\d+/auth\?\S+)$", ui.text, re.MULTILINE)
        if match:
            break
        time.sleep(0.05)
    assert match, (ui.text, run.future.done() and run.future.exception())
    url = match.group(1)
    listener = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    landed: list[str] = []

    def server_side(route: Any) -> None:
        """Form posts to the authorization server go through; the redirects they start are followed here, up to the
        final one to the listener, which the browser never makes: it stays on a page that shows where it would have
        gone (as when it runs on another machine). Playwright does not route the requests of redirects."""
        response = route.fetch(max_redirects=0)
        location = urljoin(route.request.url, response.headers.get("location", ""))
        while response.status in (302, 303) and urlsplit(location).path.startswith("/auth/"):
            response = page.context.request.get(location, max_redirects=0)
            location = urljoin(location, response.headers.get("location", ""))
        if response.status in (302, 303) and location.startswith(listener):
            landed.append(location)
            route.fulfill(status=200, content_type="text/plain", body=f"This site can't be reached: {location}")
        elif response.status in (302, 303):
            route.fulfill(status=303, headers={"Location": location})
        else:
            route.fulfill(response=response)

    page.route(re.compile(re.escape(oauth_server.issuer) + r"/interaction/.*"), server_side)
    approve(page, url)
    for _ in range(100):
        if landed:
            break
        time.sleep(0.05)
    assert landed and "code=" in landed[0]
    assert "paste the URL" in ui.text
    ui.replies.put(landed[0])
    cred, _ = run.result()
    assert cred.access_token is not None
    assert oauth_server.introspect(cred.access_token.reveal())["active"] is True


def test_default_redirect_port_is_fixed(oauth_server: OAuthServer, page: Page) -> None:
    if not _port_closed(DEFAULT_REDIRECT_PORT):
        pytest.skip(f"port {DEFAULT_REDIRECT_PORT} is busy on this machine")
    run = LoginRun(QueueUI(), provider=oauth_server.provider("pkce"), client=None, client_id=PUBLIC_CLIENT)
    url = run.url()
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == [f"http://127.0.0.1:{DEFAULT_REDIRECT_PORT}/callback"]
    approve(page, url)
    run.result()
    assert _port_closed(DEFAULT_REDIRECT_PORT)
