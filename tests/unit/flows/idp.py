"""The test OAuth server's sign-in pages driven over plain HTTP (no browser), and tokens fetched without authsome.

oidc-provider's development interactions are plain HTML forms: a device-code confirmation, a login form (any login and
password), a consent form, and a "[ Cancel ]" link that denies. :func:`sign_in` fills each form and follows each
redirect, up to the loopback redirect of a PKCE login or the device flow's "Sign-in Success" page.
"""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import httpx
from tests.oauth_server.fixtures import PUBLIC_CLIENT, OAuthServer

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPES = "openid email offline_access"
_FORM = re.compile(r'<form[^>]*action="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
_CANCEL = re.compile(r'href="([^"]+/abort)"')


def sign_in(url: str, login: str = "alice", *, deny: bool = False) -> httpx.Response:
    """Open ``url`` (an authorization or device verification URL) and sign in and consent as ``login`` (or cancel at
    the consent step when ``deny``). Returns the last response: the loopback listener's page for a PKCE login."""
    with httpx.Client(follow_redirects=True, timeout=15) as client:
        response = client.get(url)
        for _ in range(6):
            if deny and "[ Cancel ]" in response.text and 'name="login"' not in response.text:
                cancel = _CANCEL.search(response.text)
                assert cancel is not None, response.text
                return client.get(response.url.join(unescape(cancel.group(1))))
            form = _FORM.search(response.text)
            if form is None:
                return response
            fields = dict(_HIDDEN.findall(response.text))
            if 'name="login"' in response.text:
                fields.update(login=login, password="any-password")
            response = client.post(response.url.join(unescape(form.group(1))), data=fields)
        raise AssertionError(f"the sign-in did not finish; last page: {response.url}")


def start_device(server: OAuthServer, client_id: str = PUBLIC_CLIENT, scope: str = SCOPES) -> dict[str, Any]:
    """A device authorization (RFC 8628) started by plain HTTP, not by authsome."""
    response = httpx.post(server.url("/device/auth"), data={"client_id": client_id, "scope": scope}, timeout=15)
    response.raise_for_status()
    grant: dict[str, Any] = response.json()
    return grant


def fresh_tokens(server: OAuthServer, login: str = "alice", client_id: str = PUBLIC_CLIENT) -> dict[str, Any]:
    """A real token response (access, refresh and ID token) from the server, obtained without authsome's code."""
    grant = start_device(server, client_id)
    sign_in(grant["verification_uri_complete"], login)
    response = httpx.post(
        server.url("/token"),
        data={"client_id": client_id, "grant_type": DEVICE_GRANT, "device_code": grant["device_code"]},
        timeout=15,
    )
    response.raise_for_status()
    tokens: dict[str, Any] = response.json()
    return tokens
