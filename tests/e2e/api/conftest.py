"""Library/CLI-level OAuth tests: the real authorization server, Chromium approving, authsome's own store."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from authsome import Authsome, ConnectionInfo, LoginOptions
from oauth_server.fixtures import OAuthServer, approve, chromium, loopback_context, oauth_server  # noqa: F401
from oauth_server.harness import QueueUI

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:  # noqa: F811
    context = loopback_context(chromium)
    yield context.new_page()
    context.close()


@pytest.fixture
def idp(oauth_server: OAuthServer, tmp_path: Path) -> Authsome:  # noqa: F811
    """An Authsome whose registry has `testidp`, a provider pointing at the real server."""
    path = tmp_path / "testidp.json"
    data = oauth_server.provider("pkce").to_dict()
    data["client"] = {"client_id_env": "TESTIDP_CLIENT_ID"}  # public clients: no secret to ask for
    path.write_text(json.dumps(data))
    auth = Authsome()
    auth.register(path)
    return auth


@pytest.fixture
def browser_login(page: Page) -> Callable[..., ConnectionInfo]:
    """Run `Authsome.login` on a worker thread while Chromium approves on the main thread."""

    def run(auth: Authsome, client_id: str, login: str = "alice", **options: object) -> ConnectionInfo:
        ui = QueueUI()
        opts = LoginOptions(client_id=client_id, redirect_port=0, **options)  # type: ignore[arg-type]
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(auth.login, "testidp", opts, ui=ui)
            approve(page, ui.urls.get(timeout=20), login)
            return future.result(timeout=30)

    return run
