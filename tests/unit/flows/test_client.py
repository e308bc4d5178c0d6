"""flows.client: which OAuth client a login uses, and where its secret comes from (never the command line)."""

from __future__ import annotations

import io
import re
import sys

import httpx
import pytest
from tests.oauth_server.fixtures import OAuthServer
from tests.oauth_server.harness import QueueUI, in_background

from authsome.errors import UsageError
from authsome.flows.client import check_client_id, check_client_secret, resolve_client
from authsome.flows.ui import PlainUI
from authsome.models import ClientConfig
from authsome.providers.schema import Provider
from authsome.secret import Secret

ENV_ID = "TESTIDP_CLIENT_ID"
ENV_SECRET = "TESTIDP_CLIENT_SECRET"


@pytest.fixture
def confidential(oauth_server: OAuthServer) -> Provider:
    """A provider that names a client-secret variable (so a secret is expected)."""
    return oauth_server.provider("device_code", confidential=True)


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # like `</dev/null` or an agent's pipe


def test_check_client_id_and_secret() -> None:
    assert check_client_id("  abc-123.apps  ", "x") == "abc-123.apps"
    for bad in ("", "has space", "tab\there", "é"):
        with pytest.raises(UsageError, match="the OAuth client id from --client-id"):
            check_client_id(bad, "--client-id")
    assert check_client_secret(" s3 ", "x") == Secret("s3")
    for bad in ("", "a\x00b", "x" * 4097):
        with pytest.raises(UsageError, match="client secret from the prompt is empty, too long"):
            check_client_secret(bad, "the prompt")


def test_the_client_id_comes_from_the_flag_then_the_variable_then_the_store(confidential: Provider) -> None:
    stored = ClientConfig(client_id="stored-id", client_secret=Secret("stored-secret"))
    env = {ENV_ID: "env-id", ENV_SECRET: "env-secret"}
    ui = PlainUI(stream=io.StringIO())
    assert resolve_client(confidential, stored=stored, client_id="flag-id", env=env, ui=ui).client_id == "flag-id"
    from_env = resolve_client(confidential, stored=stored, client_id=None, env=env, ui=ui)
    assert from_env == ClientConfig(client_id="env-id", client_secret=Secret("env-secret"))
    assert resolve_client(confidential, stored=stored, client_id=None, env={}, ui=ui) is stored
    same = resolve_client(confidential, stored=stored, client_id="stored-id", env={}, ui=ui)
    assert same is stored  # the same client id again: its stored secret is kept


def test_at_a_terminal_the_id_and_secret_are_prompted(confidential: Provider) -> None:
    ui = PlainUI(answers=["typed-id"], secret_answers=["typed-secret"], stream=io.StringIO())
    client = resolve_client(confidential, stored=None, client_id=None, env={}, ui=ui)
    assert client == ClientConfig(client_id="typed-id", client_secret=Secret("typed-secret"))
    public = resolve_client(
        confidential, stored=None, client_id="x", env={}, ui=PlainUI(secret_answers=["   "], stream=io.StringIO())
    )
    assert public is not None and public.client_secret is None  # Enter: a public client
    assert "typed-secret" not in "\n".join(ui.messages)


def test_without_a_terminal_a_missing_client_id_says_how_to_give_one(confidential: Provider) -> None:
    with pytest.raises(UsageError, match="no OAuth client id for Test IdP") as info:
        resolve_client(confidential, stored=None, client_id=None, env={}, ui=PlainUI())
    assert info.value.hint is not None and "--client-id" in info.value.hint and ENV_ID in info.value.hint
    assert resolve_client(confidential, stored=None, client_id=None, env={}, ui=PlainUI(), required=False) is None


def test_without_a_terminal_no_secret_form_waits_for_nobody(confidential: Provider) -> None:
    """Nobody is there to fill in a browser form: the client is taken as public at once (issue 12, item 1)."""
    ui = QueueUI()
    future = in_background(resolve_client, confidential, stored=None, client_id="cid", env={}, ui=ui)
    client = future.result(5)
    assert client == ClientConfig(client_id="cid") and ui.urls.empty()


def test_the_secret_form_when_asked_for(confidential: Provider) -> None:
    ui = QueueUI()
    future = in_background(
        resolve_client, confidential, stored=None, client_id="cid", env={}, ui=ui, allow_browser=True
    )
    url = ui.urls.get(timeout=10)
    with httpx.Client() as http:
        page = http.get(url)
        assert "Test IdP OAuth client secret" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        assert http.post(url, data={"csrf": csrf, "secret": "typed-in-the-form"}).status_code == 200
    assert future.result(10) == ClientConfig(client_id="cid", client_secret=Secret("typed-in-the-form"))


def test_never_a_form_with_no_browser(confidential: Provider) -> None:
    ui = QueueUI()
    client = resolve_client(confidential, stored=None, client_id="cid", env={}, ui=ui, allow_browser=False)
    assert client is not None and client.client_secret is None and ui.urls.empty()
