"""A refresh that fails on a non-default connection names the command that fixes *that* connection.

The real authorization server refuses the refresh of `testidp/work` (its client is unknown there: ``invalid_client``,
not ``invalid_grant``); the child's request through `authsome run` gets a 401 whose ``fix_command`` logs in to `work`,
not to the default connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.oauth_server.fixtures import SHORT_CLIENT

from authsome import Authsome, RefreshFailed
from authsome.models import ClientConfig, Credential
from authsome.secret import Secret

if TYPE_CHECKING:
    from tests.e2e.api.conftest import Runs

pytestmark = pytest.mark.e2e


def test_a_refused_refresh_names_the_connection_to_log_in_to(
    idp: Authsome, browser_login: Callable[..., Any], idp_api: Any, tmp_path: Path, run: Runs
) -> None:
    browser_login(idp, SHORT_CLIENT, connection="work")  # access tokens live 4 s
    idp.store.save_client("testidp", ClientConfig(client_id="authsome-forgotten"))  # the server no longer knows it
    expires_at = idp.store.load("testidp", "work").expires_at
    assert expires_at is not None
    time.sleep(max(0.0, expires_at - time.time()) + 0.5)

    out = tmp_path / "out.json"
    command = ["sh", "-c", f"curl -sS https://api.testidp.test/v1/me > {out}"]
    code = run(idp, command, connections={"testidp": "work"}, upstream_ca=idp_api.ca_file, confdir=tmp_path / "mitm")
    assert code == 0
    error = json.loads(out.read_text())
    assert error["error"]["code"] == "credential_unavailable" and error["connection"] == "work"
    assert "invalid_client" in error["reason"]
    assert error["fix_command"] == "authsome login testidp --connection work --force"
    assert error["fix"] == error["fix_command"]
    assert idp_api.seen == []  # nothing went upstream without a credential

    with pytest.raises(RefreshFailed) as raised:  # the library says the same, as data and in its hint
        Authsome().headers_for("testidp", "work")
    assert raised.value.fix_command == "authsome login testidp --connection work --force"
    assert raised.value.hint == "run `authsome login testidp --connection work --force`"


def test_an_unusable_stored_key_names_the_connection_to_log_in_to(openai_api: Any, tmp_path: Path, run: Runs) -> None:
    auth = Authsome()
    auth.store.save("openai", "work", Credential(kind="api_key", api_key=Secret("sk-broken\nkey-0123456789")))
    out = tmp_path / "out.json"
    command = ["sh", "-c", f"curl -sS https://api.openai.com/v1/models > {out}"]
    code = run(auth, command, connections={"openai": "work"}, upstream_ca=openai_api.ca_file, confdir=tmp_path / "m")
    assert code == 0
    error = json.loads(out.read_text())
    assert "control characters" in error["reason"]
    assert error["fix_command"] == "authsome login openai --connection work --force"
    assert openai_api.seen == []
