"""Device code and dynamic client registration through `Authsome.login`, against the real authorization server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.oauth_server.fixtures import (
    PUBLIC_CLIENT,
    SHORT_CLIENT,
    SLOW_CLIENT,
    OAuthServer,
    approve,
    approve_device,
    loopback_context,
)
from tests.oauth_server.harness import QueueUI, in_background

from authsome import AuthenticationFailed, Authsome, LoginOptions

pytestmark = pytest.mark.e2e


def device_login(auth: Authsome, client_id: str, page: Any = None, **options: Any) -> tuple[Any, QueueUI, float]:
    """Start a device login; approve it in Chromium when ``page`` is given. Returns (result or error, ui, seconds)."""
    ui = QueueUI()
    opts = LoginOptions(flow="device_code", client_id=client_id, **options)
    start = time.monotonic()
    future = in_background(auth.login, "testidp", opts, ui=ui)
    if page is not None:
        approve_device(page, ui.urls.get(timeout=20))
    try:
        result: Any = future.result(timeout=60)
    except Exception as exc:  # returned for the test to assert on
        result = exc
    return result, ui, time.monotonic() - start


def test_device_flow_logs_in(idp: Authsome, page: Any) -> None:
    info, ui, _ = device_login(idp, PUBLIC_CLIENT, page)
    assert not isinstance(info, Exception), info
    assert info.status == "connected" and info.has_refresh_token
    assert "enter the code" in ui.text  # the verification URL and user code were shown
    assert idp.credential("testidp").metadata.get("flow") == "device_code"


def test_expired_device_code_is_authentication_failed(idp: Authsome) -> None:
    error, _, _ = device_login(idp, SHORT_CLIENT)  # device codes of this client live 3 s; nobody approves
    assert isinstance(error, AuthenticationFailed), error
    assert "expired" in error.message.lower()
    assert idp.store.info("testidp", "default") is None


def test_slow_down_is_honoured(idp: Authsome, page: Any) -> None:
    """The server answers the first poll slow_down and keeps doing so for anyone polling faster than it asked."""
    info, _, seconds = device_login(idp, SLOW_CLIENT, page)
    assert not isinstance(info, Exception), info
    assert seconds >= 5  # the interval grew by slow_down's 5 s before the successful poll


def test_dynamic_client_registration_is_stored_and_reused(
    oauth_server: OAuthServer, tmp_path: Path, chromium: Any
) -> None:
    data = oauth_server.provider("dcr_pkce").to_dict()
    data["client"] = {}
    path = tmp_path / "testidp.json"
    path.write_text(json.dumps(data))
    auth = Authsome()
    auth.register(path)

    def login(force: bool) -> None:
        ui = QueueUI()
        context = loopback_context(chromium)  # a fresh browser profile: signed out, so the login form shows
        try:
            future = in_background(auth.login, "testidp", LoginOptions(redirect_port=0, force=force), ui=ui)
            approve(context.new_page(), ui.urls.get(timeout=20))
            future.result(timeout=30)
        finally:
            context.close()

    login(force=False)
    client = auth.store.client("testidp")
    assert client is not None and client.registered
    assert auth.list()[[r.name for r in auth.list()].index("testidp")].state == "connected"
    login(force=True)
    again = auth.store.client("testidp")
    assert again is not None and again.client_id == client.client_id  # reused, not registered twice
