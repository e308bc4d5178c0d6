"""OAuth through authsome's own store: login, single-flight refresh across processes, invalid_grant, revocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.oauth_server.fixtures import PUBLIC_CLIENT, SHORT_CLIENT, OAuthServer

from authsome import Authsome, CredentialMissing, RefreshFailed
from authsome.models import Credential
from authsome.secret import Secret

if TYPE_CHECKING:
    from tests.e2e.api.conftest import Runs

pytestmark = pytest.mark.e2e

HEADERS_SCRIPT = (
    "import sys, time\n"
    "from authsome import Authsome\n"
    "start = float(sys.argv[1])\n"
    "time.sleep(max(0.0, start - time.time()))\n"
    "print(Authsome().headers_for('testidp')['Authorization'])\n"
)


def wait_until_expired(auth: Authsome) -> None:
    cred = auth.store.load("testidp", "default")
    assert cred.expires_at is not None
    time.sleep(max(0.0, cred.expires_at - time.time()) + 0.5)


def test_login_stores_tokens_encrypted_and_labels_the_account(
    idp: Authsome, browser_login: Callable[..., Any], oauth_server: OAuthServer
) -> None:
    info = browser_login(idp, PUBLIC_CLIENT, login="alice")
    assert info.status == "connected" and info.has_refresh_token
    assert info.account and "alice" in info.account
    token = idp.credential("testidp").access_token
    assert token is not None and oauth_server.introspect(token.reveal())["active"] is True
    assert token.reveal().encode() not in idp.store.vault.path.read_bytes()
    assert idp.list()[[r.name for r in idp.list()].index("testidp")].state == "connected"


def test_ten_processes_refresh_once(
    idp: Authsome, browser_login: Callable[..., Any], oauth_server: OAuthServer
) -> None:
    browser_login(idp, SHORT_CLIENT)
    old = idp.store.load("testidp", "default")
    wait_until_expired(idp)
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HEADERS_SCRIPT, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(10)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    headers = {out.strip() for out, _ in results}
    assert len(headers) == 1, "every process must get the same, once-refreshed token"
    new = idp.store.load("testidp", "default")
    assert new.access_token != old.access_token and new.refresh_token != old.refresh_token  # rotated
    assert headers == {f"Bearer {new.access_token.reveal()}"}  # type: ignore[union-attr]
    refreshes = [r for r in idp.log(provider="testidp") if r["event"] == "refresh"]
    assert [r["ok"] for r in refreshes] == [True]
    # the rotated-away refresh token is dead at the server
    assert oauth_server.introspect(old.refresh_token.reveal())["active"] is False  # type: ignore[union-attr]


def test_rejected_refresh_token_marks_the_connection_invalid(
    idp: Authsome, browser_login: Callable[..., Any], oauth_server: OAuthServer
) -> None:
    browser_login(idp, SHORT_CLIENT)
    cred = idp.store.load("testidp", "default")
    assert cred.refresh_token is not None
    httpx.post(
        oauth_server.url("/token/revocation"),
        data={"token": cred.refresh_token.reveal(), "client_id": SHORT_CLIENT},
        timeout=10,
    ).raise_for_status()
    wait_until_expired(idp)
    with pytest.raises(RefreshFailed) as err:
        idp.headers_for("testidp")
    assert err.value.exit_code == 6 and "authsome login testidp --force" in (err.value.hint or "")
    assert idp.get("testidp").status == "invalid"
    with pytest.raises(CredentialMissing) as again:  # the rejected refresh token is not sent a second time
        idp.headers_for("testidp")
    assert again.value.exit_code == 5 and "authsome login testidp --force" in (again.value.hint or "")
    assert [r["ok"] for r in idp.log(provider="testidp") if r["event"] == "refresh"] == [False]


def test_revoke_is_observed_at_the_server(
    idp: Authsome, browser_login: Callable[..., Any], oauth_server: OAuthServer
) -> None:
    browser_login(idp, PUBLIC_CLIENT)
    cred = idp.store.load("testidp", "default")
    assert cred.access_token is not None and cred.refresh_token is not None
    result = idp.revoke("testidp")
    assert result["revoked_remotely"] == {"default": True}
    assert oauth_server.introspect(cred.refresh_token.reveal())["active"] is False
    assert idp.store.info("testidp", "default") is None


def test_remove_never_contacts_the_provider(
    idp: Authsome, browser_login: Callable[..., Any], oauth_server: OAuthServer
) -> None:
    browser_login(idp, PUBLIC_CLIENT)
    cred = idp.store.load("testidp", "default")
    idp.remove("testidp", "default")
    assert oauth_server.introspect(cred.access_token.reveal())["active"] is True  # type: ignore[union-attr]


def test_token_expiring_mid_run_is_refreshed_before_the_next_request(
    idp: Authsome,
    browser_login: Callable[..., Any],
    oauth_server: OAuthServer,
    idp_api: Any,
    tmp_path: Any,
    run: Runs,
) -> None:
    browser_login(idp, SHORT_CLIENT)  # access tokens live 4 s
    first = idp.store.load("testidp", "default").access_token
    assert first is not None
    script = "curl -sSf https://api.testidp.test/one && sleep 6 && curl -sSf https://api.testidp.test/two"
    code = run(idp, ["sh", "-c", script], upstream_ca=idp_api.ca_file, confdir=tmp_path / "mitm")
    assert code == 0
    assert len(idp_api.seen) == 2
    one, two = idp_api.seen
    assert one == f"Bearer {first.reveal()}"
    assert two is not None and two != one and two.startswith("Bearer ")
    assert oauth_server.introspect(two.removeprefix("Bearer "))["active"] is True


def _self_hosted(oauth_server: OAuthServer, tmp_path: Any, *, host_url: str, revocation: bool = True) -> Authsome:
    """`testidp` as a self-hostable product: every URL under ``{base_url}``, whose default instance does not exist."""
    data = oauth_server.provider("pkce").to_dict()
    origin = oauth_server.issuer
    data["oauth"] = {
        k: ("{base_url}" + v[len(origin) :] if isinstance(v, str) and v.startswith(origin) else v)
        for k, v in data["oauth"].items()
        if revocation or k != "revocation_url"
    }
    data["oauth"]["base_url"] = "http://127.0.0.1:9"  # "the public instance": nothing listens there
    data["client"] = {"client_id_env": "TESTIDP_CLIENT_ID"}
    data["host_url"] = host_url
    path = tmp_path / "selfhosted.json"
    path.write_text(json.dumps(data))
    auth = Authsome()
    auth.register(path)
    return auth


def test_a_self_hosted_login_refreshes_and_revokes_at_its_own_instance(
    oauth_server: OAuthServer, browser_login: Callable[..., Any], tmp_path: Any
) -> None:
    auth = _self_hosted(oauth_server, tmp_path, host_url="api.testidp.test")
    browser_login(auth, SHORT_CLIENT, base_url=oauth_server.issuer)
    old = auth.store.load("testidp", "default")
    wait_until_expired(auth)
    fresh = auth.headers_for("testidp")["Authorization"]  # refreshed at the instance it was logged in to
    new = auth.store.load("testidp", "default")
    assert new.access_token is not None and fresh == f"Bearer {new.access_token.reveal()}"
    assert new.access_token != old.access_token
    assert auth.revoke("testidp")["revoked_remotely"] == {"default": True}
    assert oauth_server.introspect(new.refresh_token.reveal())["active"] is False  # type: ignore[union-attr]


def test_a_provider_without_a_revocation_url_is_revoked_at_the_discovered_endpoint(
    oauth_server: OAuthServer, browser_login: Callable[..., Any], tmp_path: Any
) -> None:
    auth = _self_hosted(oauth_server, tmp_path, host_url="api.testidp.test", revocation=False)
    browser_login(auth, PUBLIC_CLIENT, base_url=oauth_server.issuer)
    cred = auth.store.load("testidp", "default")
    assert auth.revoke("testidp")["revoked_remotely"] == {"default": True}
    assert oauth_server.introspect(cred.refresh_token.reveal())["active"] is False  # type: ignore[union-attr]


def test_a_self_hosted_connection_is_injected_for_its_own_host_only(
    oauth_server: OAuthServer, idp_api: Any, tmp_path: Any, run: Runs
) -> None:
    auth = _self_hosted(oauth_server, tmp_path, host_url="{base_url}")
    token = "self-hosted-access-token"
    with auth.store.vault.transaction():
        auth.store.save(
            "testidp",
            "default",
            Credential(kind="oauth2", access_token=Secret(token), metadata={"base_url": "https://api.testidp.test"}),
        )
    code = run(
        auth, ["curl", "-sSf", "https://api.testidp.test/x"], upstream_ca=idp_api.ca_file, confdir=tmp_path / "m"
    )
    assert code == 0
    assert idp_api.seen == [f"Bearer {token}"]
