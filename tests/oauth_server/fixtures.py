"""Reusable pytest fixtures: a headless Chromium and a real OAuth/OpenID server (panva/oidc-provider) on loopback.

Use them from any conftest.py (they are plain fixtures; importing them into a conftest registers them)::

    sys.path.insert(0, str(Path(__file__).resolve().parents[N]))      # the tests/ directory
    from oauth_server.fixtures import chromium, oauth_server           # noqa: F401

``oauth_server`` (session scope) runs ``node server.js`` from this directory (``scripts/oauth-server-setup.sh`` must
have run ``npm ci``) and yields an :class:`OAuthServer`: its issuer, a :meth:`OAuthServer.provider` factory that
builds an authsome provider pointing at it, :meth:`OAuthServer.introspect` to see a token as the server does, and
browser helpers (:func:`approve`, :func:`deny`, :func:`approve_device`) that click through its login/consent pages.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

    from authsome.providers.schema import Provider

SERVER_DIR = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("AUTHSOME_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
]

# Mirrors server.js: pre-registered clients and the confidential client's secret (a test value, not a real secret).
PUBLIC_CLIENT = "authsome-public"
SHORT_CLIENT = "authsome-short"  # short access-token and device-code lifetimes
SLOW_CLIENT = "authsome-slow"  # first device poll answered slow_down
CONFIDENTIAL_CLIENT = "authsome-confidential"
CONFIDENTIAL_SECRET = "confidential-client-secret-for-tests-only"
SERVER_ENV = {
    "OIDC_ACCESS_TOKEN_TTL": "3600",
    "OIDC_SHORT_ACCESS_TOKEN_TTL": "4",
    "OIDC_SHORT_DEVICE_CODE_TTL": "3",
    "OIDC_DEVICE_INTERVAL": "1",
}


@dataclass
class OAuthServer:
    """A running oidc-provider: where it is and how to talk to it."""

    issuer: str
    process: subprocess.Popen[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.issuer + path

    def provider(
        self,
        flow: str = "pkce",
        *,
        name: str = "testidp",
        scopes: tuple[str, ...] = ("openid", "email", "offline_access"),
        confidential: bool = False,
        **oauth: Any,
    ) -> Provider:
        """An authsome provider for this server. ``oauth`` overrides/extends the endpoint block (None removes).

        ``confidential`` declares a client secret variable (TESTIDP_CLIENT_SECRET): without it set, the flow then
        asks for the secret (masked prompt or browser form); public-client providers declare none.
        """
        from authsome.providers.schema import parse_provider

        block: dict[str, Any] = {
            "authorization_url": self.url("/auth"),
            "token_url": self.url("/token"),
            "revocation_url": self.url("/token/revocation"),
            "device_authorization_url": self.url("/device/auth"),
            "userinfo_url": self.url("/me"),
            "issuer": self.issuer,
            "scopes": list(scopes),
        }
        if flow == "dcr_pkce":
            block["registration_endpoint"] = self.url("/reg")
        block.update(oauth)
        block = {k: v for k, v in block.items() if v is not None}
        client = {"client_id_env": "TESTIDP_CLIENT_ID"}
        if confidential:
            client["client_secret_env"] = "TESTIDP_CLIENT_SECRET"
        data = {
            "schema_version": 1,
            "name": name,
            "display_name": "Test IdP",
            "auth_type": "oauth2",
            "flow": flow,
            "oauth": block,
            "client": client,
        }
        return parse_provider(data)

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection as the confidential client (the server allows it to inspect any token)."""
        import httpx

        response = httpx.post(
            self.url("/token/introspection"),
            data={"token": token},
            auth=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET),
            timeout=10,
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


def _start_server(log: Path, extra_env: dict[str, str]) -> OAuthServer:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: install nodejs (scripts/test does)")
    if not (SERVER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the test OAuth server is not installed: run scripts/oauth-server-setup.sh")
    env = {**os.environ, **SERVER_ENV, **extra_env, "PORT": "0"}
    log_file = log.open("w")
    proc = subprocess.Popen(
        [node, "server.js"], cwd=SERVER_DIR, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True
    )
    log_file.close()
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=20)
        issuer = json.loads(first)["issuer"]
    except (queue.Empty, ValueError, KeyError):
        proc.kill()
        pytest.fail(f"the OAuth server did not start; its log:\n{log.read_text()}")
    return OAuthServer(issuer=issuer, process=proc, log=log, env=env)


@pytest.fixture(scope="session")
def oauth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServer]:
    """The real authorization server, started once per test session on 127.0.0.1:<ephemeral>."""
    server = _start_server(tmp_path_factory.mktemp("oidc") / "server.log", {})
    yield server
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session (Debian's /usr/bin/chromium, driven by playwright)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install chromium (scripts/test does) or set AUTHSOME_TEST_CHROMIUM")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def loopback_context(browser: Browser) -> BrowserContext:
    """A fresh browser profile (no cookies) that can only reach 127.0.0.1: the tests never touch the internet."""
    context = browser.new_context()
    context.set_default_timeout(15_000)

    def guard(route: Any) -> None:
        host = route.request.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)
    return context


def sign_in(page: Page, login: str) -> None:
    """Fill oidc-provider's development login form (any login and password are accepted)."""
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any-password")
    page.click("button[type=submit]")


def approve(page: Page, url: str, login: str = "alice") -> None:
    """Open an authorization URL, sign in, consent; the server then redirects to the loopback listener."""
    page.goto(url)
    sign_in(page, login)
    page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
    page.click("button[type=submit]")


def deny(page: Page, url: str, login: str = "alice") -> None:
    """Open an authorization URL, sign in, then press the consent page's "[ Cancel ]" (access_denied)."""
    page.goto(url)
    sign_in(page, login)
    page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
    page.click("text=[ Cancel ]")


def approve_device(page: Page, verification_uri_complete: str, login: str = "alice") -> None:
    """Confirm a device code, sign in and consent, up to oidc-provider's "Sign-in Success" page."""
    page.goto(verification_uri_complete)
    page.click("button[autofocus]")
    sign_in(page, login)
    page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Sign-in Success")
