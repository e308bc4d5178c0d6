"""flows.device: the device authorization grant (RFC 8628) against the real server, approved over plain HTTP."""

from __future__ import annotations

import json
import queue
import re
from typing import Any

import pytest
from tests.oauth_server.fixtures import PUBLIC_CLIENT, SLOW_CLIENT, OAuthServer
from tests.oauth_server.harness import QueueUI, in_background
from tests.unit.flows.conftest import Canned
from tests.unit.flows.idp import sign_in

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows import device
from authsome.flows.discovery import Endpoints
from authsome.models import ClientConfig

SCOPES = ("openid", "email", "offline_access")


def endpoints_of(server: OAuthServer) -> Endpoints:
    return Endpoints(issuer=server.issuer, token=server.url("/token"), device_authorization=server.url("/device/auth"))


class FakeTime:
    """A clock that moves only when the flow sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class InfoUI(QueueUI):
    """A QueueUI that also hands every message to the test as it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: queue.Queue[str] = queue.Queue()

    def info(self, message: str) -> None:
        super().info(message)
        self.infos.put(message)


def test_device_login_opens_the_prefilled_url_and_returns_the_tokens(oauth_server: OAuthServer) -> None:
    ui = QueueUI()
    future = in_background(
        device.authorize,
        endpoints_of(oauth_server),
        display_name="Test IdP",
        client=ClientConfig(client_id=PUBLIC_CLIENT),
        scopes=SCOPES,
        ui=ui,
        no_browser=False,
    )
    url = ui.urls.get(timeout=15)
    assert "user_code=" in url
    assert "Success" in sign_in(url, "dave").text
    token: dict[str, Any] = future.result(30)
    assert token["access_token"] and token["refresh_token"] and token["scope"] == " ".join(SCOPES)
    assert oauth_server.introspect(token["access_token"])["sub"] == "dave"
    assert re.search(r"open http://127\.0\.0\.1:\d+/device and enter the code: \w{4}-\w{4}", ui.text)
    assert any("Waiting for you to approve the sign-in" in m for m in ui.messages)  # the countdown


def test_without_a_browser_the_printed_url_and_code_are_enough(oauth_server: OAuthServer) -> None:
    ui = InfoUI()
    future = in_background(
        device.authorize,
        endpoints_of(oauth_server),
        display_name="Test IdP",
        client=ClientConfig(client_id=PUBLIC_CLIENT),
        scopes=SCOPES,
        ui=ui,
    )  # no_browser default
    match = re.search(r"open (\S+) and enter the code: (\S+)", ui.infos.get(timeout=15))
    assert match, ui.text
    assert ui.urls.empty()  # nothing was opened
    sign_in(f"{match.group(1)}?user_code={match.group(2)}")
    assert future.result(30)["access_token"]


def test_a_denied_sign_in_is_authentication_failed(oauth_server: OAuthServer) -> None:
    ui = QueueUI()
    future = in_background(
        device.authorize,
        endpoints_of(oauth_server),
        display_name="Test IdP",
        client=ClientConfig(client_id=PUBLIC_CLIENT),
        scopes=SCOPES,
        ui=ui,
        no_browser=False,
    )
    sign_in(ui.urls.get(timeout=15), deny=True)
    with pytest.raises(AuthenticationFailed, match="the sign-in to Test IdP was denied"):
        future.result(30)


def test_slow_down_adds_five_seconds_each_time_up_to_a_minute(
    oauth_server: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answers slow_down to this client's first poll and to every poll sooner than its interval: with a
    clock that only moves when the flow sleeps, every poll is too soon, until the device code's lifetime is used up."""
    intervals: list[float] = []
    wait = device._wait
    monkeypatch.setattr(device, "_wait", lambda interval, *rest: (intervals.append(interval), wait(interval, *rest)))
    fake = FakeTime()
    with pytest.raises(AuthenticationFailed, match="the Test IdP device code expired before the sign-in was approved"):
        device.authorize(
            endpoints_of(oauth_server),
            display_name="Test IdP",
            client=ClientConfig(client_id=SLOW_CLIENT),
            scopes=SCOPES,
            ui=QueueUI(),
            clock=fake.clock,
            sleep=fake.sleep,
        )
    assert intervals[:5] == [1, 6, 11, 16, 21]  # the announced interval, then +5 per slow_down (RFC 8628 3.5)
    assert intervals[-1] == device.MAX_INTERVAL
    assert fake.now == pytest.approx(600)  # polling stopped when the code's lifetime was used up


def test_a_server_error_backs_off_and_pending_keeps_polling(canned: Canned) -> None:
    canned.replies["/device"] = (
        200,
        {
            "device_code": "dc",
            "user_code": "ABCD-EFGH",
            "interval": 2,
            "verification_uri": canned.url("/verify"),
            "expires_in": 300,
        },
    )
    canned.replies["/token"] = [
        (502, "<html>bad gateway</html>"),
        (400, {"error": "authorization_pending"}),
        (200, {"access_token": "at-1", "token_type": "Bearer"}),
    ]
    fake = FakeTime()
    token = device.authorize(
        Endpoints(device_authorization=canned.url("/device"), token=canned.url("/token")),
        display_name="X",
        client=ClientConfig(client_id="c"),
        scopes=(),
        ui=QueueUI(),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert token["access_token"] == "at-1"
    assert fake.now == pytest.approx(2 + 4 + 4)  # 2 s, doubled after the 502, kept on pending
    polls = [body for method, path, body in canned.requests if path == "/token"]
    assert len(polls) == 3 and all(b"device_code=dc" in body for body in polls)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"error": "expired_token"}, "device code expired before the sign-in was approved"),
        ({"error": "invalid_grant", "error_description": "no"}, r"X refused the device login: invalid_grant \(no\)"),
    ],
)
def test_final_token_errors(canned: Canned, error: dict[str, str], message: str) -> None:
    canned.replies["/device"] = (
        200,
        {"device_code": "dc", "user_code": "ABCD", "interval": 1, "verification_uri": canned.url("/verify")},
    )
    canned.replies["/token"] = (400, error)
    fake = FakeTime()
    with pytest.raises(AuthenticationFailed, match=message):
        device.authorize(
            Endpoints(device_authorization=canned.url("/device"), token=canned.url("/token")),
            display_name="X",
            client=ClientConfig(client_id="c"),
            scopes=(),
            ui=QueueUI(),
            clock=fake.clock,
            sleep=fake.sleep,
        )


def test_an_unknown_client_cannot_start(oauth_server: OAuthServer) -> None:
    with pytest.raises(AuthenticationFailed, match="Test IdP refused to start a device login: invalid_client"):
        device.authorize(
            endpoints_of(oauth_server),
            display_name="Test IdP",
            client=ClientConfig(client_id="no-such-client"),
            scopes=SCOPES,
            ui=QueueUI(),
        )


@pytest.mark.parametrize(
    ("grant", "error"),
    [
        ({"user_code": "A", "verification_uri": "https://x.test/d"}, AuthenticationFailed),  # no device_code
        ({"device_code": "d", "user_code": "A" * 65, "verification_uri": "https://x.test/d"}, AuthenticationFailed),
        ({"device_code": "d", "user_code": "A\x1b", "verification_uri": "https://x.test/d"}, AuthenticationFailed),
        ({"device_code": "d", "user_code": "A", "verification_uri": "http://x.test/d"}, UsageError),  # not https
        (
            {
                "device_code": "d",
                "user_code": "A",
                "verification_uri": "https://x.test/d",
                "verification_uri_complete": "javascript:alert(1)",
            },
            UsageError,
        ),
    ],
)
def test_a_bad_device_grant_is_refused(grant: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        device._parse_grant(grant)


def test_google_style_grant_and_defaults() -> None:
    parsed = device._parse_grant(
        {
            "device_code": "d",
            "user_code": "A",
            "verification_url": "https://x.test/d",
            "expires_in": "bogus",
            "interval": 0,
        }
    )
    assert parsed == ("d", "A", "https://x.test/d", None, device.DEFAULT_EXPIRES_IN, device.DEFAULT_INTERVAL)


def test_a_json_poll_sends_the_device_code_as_json_and_reads_the_same_answers(canned: Canned) -> None:
    """Postiz's token endpoint (oauth.device_token_request "json") takes {"device_code": …}, not the RFC 8628 form."""
    canned.replies["/device"] = (
        200,
        {"device_code": "dc-9", "user_code": "WXYZ", "interval": 1, "verification_uri": canned.url("/verify")},
    )
    canned.replies["/token"] = [
        (400, {"error": "authorization_pending"}),
        (200, {"access_token": "at-json", "token_type": "Bearer"}),
    ]
    fake = FakeTime()
    token = device.authorize(
        Endpoints(device_authorization=canned.url("/device"), token=canned.url("/token")),
        display_name="Postiz",
        client=ClientConfig(client_id="c"),
        scopes=(),
        ui=QueueUI(),
        json_poll=True,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert token["access_token"] == "at-json"
    polls = [body for method, path, body in canned.requests if path == "/token"]
    assert [json.loads(body) for body in polls] == [{"device_code": "dc-9"}] * 2


def test_a_json_poll_refusal_is_reported_like_a_form_one(canned: Canned) -> None:
    canned.replies["/device"] = (
        200,
        {"device_code": "dc", "user_code": "WXYZ", "interval": 1, "verification_uri": canned.url("/verify")},
    )
    canned.replies["/token"] = (400, {"error": "access_denied"})
    fake = FakeTime()
    with pytest.raises(AuthenticationFailed, match="was denied"):
        device.authorize(
            Endpoints(device_authorization=canned.url("/device"), token=canned.url("/token")),
            display_name="Postiz",
            client=ClientConfig(client_id="c"),
            scopes=(),
            ui=QueueUI(),
            json_poll=True,
            clock=fake.clock,
            sleep=fake.sleep,
        )
