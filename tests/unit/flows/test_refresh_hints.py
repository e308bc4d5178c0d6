"""What a failed refresh or revocation tells the user to run names the connection it was about, as data too."""

from __future__ import annotations

import pytest
from tests.unit.flows.conftest import Canned

from authsome.errors import AuthsomeError
from authsome.flows.refresh import TokenRefreshFailed, refresh, revoke
from authsome.models import ClientConfig, Credential
from authsome.providers.schema import Provider, parse_provider
from authsome.secret import Secret

PUBLIC = ClientConfig(client_id="authsome-public")


def provider_at(base: str, **oauth: str) -> Provider:
    block = {"token_url": base + "/token", "device_authorization_url": base + "/device", **oauth}
    data = {"schema_version": 1, "name": "odd", "auth_type": "oauth2", "flow": "device_code", "oauth": block}
    return parse_provider(data)


def oauth_cred() -> Credential:
    return Credential(
        kind="oauth2", access_token=Secret("at-old"), refresh_token=Secret("rt-old"), expires_at=0, metadata={}
    )


@pytest.mark.parametrize(("connection", "flag"), [("work", " --connection work"), ("default", "")])
def test_a_refused_refresh_names_the_connection(canned: Canned, connection: str, flag: str) -> None:
    canned.replies["/token"] = (400, {"error": "invalid_client"})
    with pytest.raises(TokenRefreshFailed) as info:
        refresh(provider_at(canned.base), PUBLIC, oauth_cred(), connection=connection)
    assert info.value.fix_command == f"authsome login odd{flag} --force"
    assert info.value.hint == f"run `authsome login odd{flag} --force`"


def test_no_refresh_token_names_the_connection() -> None:
    cred = Credential(kind="oauth2", access_token=Secret("a"), expires_at=0)
    with pytest.raises(TokenRefreshFailed) as info:
        refresh(provider_at("http://127.0.0.1:9"), PUBLIC, cred, connection="work")
    assert info.value.fix_command == "authsome login odd --connection work --force"


def test_a_network_failure_has_no_command_to_run() -> None:
    with pytest.raises(TokenRefreshFailed) as info:
        refresh(provider_at("http://127.0.0.1:9"), PUBLIC, oauth_cred(), connection="work")
    assert info.value.fix_command is None and "network" in (info.value.hint or "")


def test_a_failed_revocation_names_the_connection_to_remove() -> None:
    provider = provider_at("http://127.0.0.1:9", revocation_url="http://127.0.0.1:9/revoke")
    with pytest.raises(AuthsomeError) as info:
        revoke(provider, PUBLIC, oauth_cred(), connection="work")
    assert info.value.hint is not None and "`authsome remove odd --connection work`" in info.value.hint
