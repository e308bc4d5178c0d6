"""OAuth end-to-end fixtures: the real oidc-provider server, headless Chromium, and logins driven through both."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from oauth_server.fixtures import (
    PUBLIC_CLIENT,
    OAuthServer,
    approve,
    loopback_context,
)
from oauth_server.harness import LoginRun, QueueUI

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from authsome.models import ClientConfig, Credential

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser profile (so every login starts signed out) that can only reach loopback."""
    context = loopback_context(chromium)
    yield context.new_page()
    context.close()


@pytest.fixture
def pkce_login(oauth_server: OAuthServer, page: Page) -> Callable[..., tuple[Credential, ClientConfig]]:
    """Log in through PKCE with the browser approving as ``login``: ``pkce_login(client_id=..., **login_kwargs)``."""

    def run(client_id: str = PUBLIC_CLIENT, login: str = "alice", **kwargs: Any) -> tuple[Credential, ClientConfig]:
        kwargs.setdefault("provider", oauth_server.provider("pkce"))
        kwargs.setdefault("client", None)
        kwargs.setdefault("redirect_port", 0)
        run = LoginRun(QueueUI(), client_id=client_id, **kwargs)
        approve(page, run.url(), login)
        return run.result()

    return run
