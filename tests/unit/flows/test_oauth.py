"""flows.oauth: the login entry point (flow, endpoints, client, account label) against the real server."""

from __future__ import annotations

from typing import Any

import pytest
from tests.oauth_server.fixtures import PUBLIC_CLIENT, OAuthServer
from tests.oauth_server.harness import QueueUI, in_background
from tests.unit.flows.idp import sign_in

from authsome.errors import UsageError
from authsome.flows import oauth


def test_device_login_labels_the_account_and_keeps_the_endpoints(oauth_server: OAuthServer) -> None:
    ui = QueueUI()
    prov = oauth_server.provider("device_code")
    future: Any = in_background(
        oauth.login,
        prov,
        client=None,
        ui=ui,
        client_id=PUBLIC_CLIENT,
        scopes=["openid", "email", "offline_access", "made_up_scope"],
    )
    sign_in(ui.urls.get(timeout=15), "gina")
    cred, client = future.result(30)
    assert cred.account == "gina@example.test"  # the ID token has only `sub`: the userinfo endpoint's email
    assert cred.metadata["flow"] == "device_code" and cred.refresh_token is not None
    assert client.client_id == PUBLIC_CLIENT
    assert client.metadata["token_endpoint"] == oauth_server.url("/token")  # kept for refresh and revocation
    assert "did not grant every scope asked for (missing: made_up_scope)" in ui.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flow": "implicit"}, "unknown OAuth flow 'implicit'"),
        ({"redirect_port": 70000}, "redirect port 70000 is out of range"),
        ({"scopes": ['bad"scope']}, "invalid scope"),
    ],
)
def test_bad_options_are_usage_errors(oauth_server: OAuthServer, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        oauth.login(oauth_server.provider("pkce"), client=None, ui=QueueUI(), **kwargs)


def test_an_api_key_provider_is_not_oauth(api_key_provider: Any) -> None:
    with pytest.raises(UsageError, match="does not use OAuth"):
        oauth.login(api_key_provider(), client=None, ui=QueueUI())
