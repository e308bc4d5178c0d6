"""Device authorization grant (RFC 8628): show a URL and a code, then poll the token endpoint.

Polling waits ``interval`` seconds (5 when the server does not say) between requests, adds 5 seconds on every
``slow_down``, keeps going on ``authorization_pending``, stops on ``access_denied``/``expired_token`` or when the
code's ``expires_in`` has passed, and backs off (doubling the interval) on network errors. A countdown is shown through
``FlowUI.countdown`` about once a second. Nothing needs a browser on this machine: it works over SSH and in CI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from authsome.errors import AuthenticationFailed
from authsome.flows.http import (
    http_errors,
    json_object,
    network_failure,
    oauth_client,
    oauth_error,
    require_secure_url,
    safe_text,
)

if TYPE_CHECKING:
    from authsome.flows.discovery import Endpoints
    from authsome.flows.ui import FlowUI
    from authsome.models import ClientConfig

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0
MAX_INTERVAL = 60.0
DEFAULT_EXPIRES_IN = 900.0


def authorize(
    endpoints: Endpoints,
    *,
    display_name: str,
    client: ClientConfig,
    scopes: Sequence[str],
    ui: FlowUI,
    no_browser: bool = True,
    json_poll: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Run the device flow and return the raw token response.

    ``json_poll``: the token endpoint is polled with a JSON body ``{"device_code": …}`` instead of the RFC 8628 form
    (Postiz; a provider file's ``oauth.device_token_request: "json"``); its answers are read the same way."""

    device_url = endpoints.require("device_authorization")
    token_url = endpoints.require("token")
    with oauth_client(client) as oc:
        data: dict[str, Any] = {}  # client_id (or Basic auth) is added by the client authentication method
        if scopes:
            data["scope"] = " ".join(scopes)
        try:
            response = oc.request(  # request(), not post(): only request() takes authlib's withhold_token
                "POST",
                device_url,
                data=data,
                auth=oc.client_auth(oc.token_endpoint_auth_method),
                headers={"Accept": "application/json"},
                withhold_token=True,
            )
        except http_errors() as exc:
            raise network_failure("device authorization endpoint", device_url, exc) from None
        grant = json_object(response, "device authorization endpoint")
        if response.status_code != 200 or "error" in grant:
            error = safe_text(grant.get("error", f"HTTP {response.status_code}"), limit=60)
            description = safe_text(grant.get("error_description", ""))
            raise AuthenticationFailed(
                f"{display_name} refused to start a device login: {error}"
                + (f" ({description})" if description else ""),
                "check the client id and that the provider allows the device flow for it",
            )
        device_code, user_code, verify_url, complete_url, expires_in, interval = _parse_grant(grant)

        ui.info(f"To sign in to {display_name}, open {verify_url} and enter the code: {user_code}")
        if complete_url and not no_browser and ui.open_browser(complete_url):
            ui.info("A browser window opened with the code filled in; approve the request there.")
        return _poll(
            oc,
            token_url,
            device_code,
            display_name,
            ui,
            clock=clock,
            sleep=sleep,
            deadline=clock() + expires_in,
            interval=interval,
            json_poll=json_poll,
        )


def _parse_grant(grant: dict[str, Any]) -> tuple[str, str, str, str | None, float, float]:
    device_code = grant.get("device_code")
    user_code = grant.get("user_code")
    verify_url = grant.get("verification_uri") or grant.get("verification_url")  # Google says _url
    if not (
        isinstance(device_code, str)
        and device_code
        and isinstance(user_code, str)
        and user_code
        and isinstance(verify_url, str)
        and len(user_code) <= 64
        and user_code.isprintable()
    ):
        raise AuthenticationFailed(
            "the device authorization response is missing device_code, user_code or verification_uri",
            "the provider's device endpoint does not follow RFC 8628",
        )
    require_secure_url(verify_url, "verification URL")
    complete = grant.get("verification_uri_complete")
    complete_url = require_secure_url(complete, "verification URL") if isinstance(complete, str) and complete else None
    return (
        device_code,
        user_code,
        verify_url,
        complete_url,
        _seconds(grant.get("expires_in"), DEFAULT_EXPIRES_IN),
        _seconds(grant.get("interval"), DEFAULT_INTERVAL),
    )


def _seconds(value: object, default: float) -> float:
    try:
        seconds = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else default
    except ValueError:
        seconds = default
    return seconds if 0 < seconds < 86400 else default


def _poll(
    oc: Any,
    token_url: str,
    device_code: str,
    display_name: str,
    ui: FlowUI,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    deadline: float,
    interval: float,
    json_poll: bool = False,
) -> dict[str, Any]:

    try:
        while True:
            _wait(interval, deadline, ui, clock, sleep)
            if clock() >= deadline:
                raise _expired(display_name)
            try:
                if json_poll:
                    token = _fetch_json(oc, token_url, device_code)
                else:
                    token = oc.fetch_token(token_url, grant_type=GRANT_TYPE, device_code=device_code)
            except http_errors():  # network trouble or a 5xx: back off and retry (RFC 8628 section 3.5)
                interval = min(interval * 2, MAX_INTERVAL)
                continue
            except ValueError:
                interval = min(interval * 2, MAX_INTERVAL)
                continue
            except Exception as exc:
                parts = oauth_error(exc)
                if parts is None:
                    raise
                error, description = parts
                if error == "authorization_pending":
                    continue
                if error == "slow_down":
                    interval = min(interval + SLOW_DOWN_STEP, MAX_INTERVAL)
                    continue
                if error == "access_denied":
                    raise AuthenticationFailed(
                        f"the sign-in to {display_name} was denied", "run the login again and approve the request"
                    ) from None
                if error == "expired_token":
                    raise _expired(display_name) from None
                raise AuthenticationFailed(
                    f"{display_name} refused the device login: {error}" + (f" ({description})" if description else ""),
                    "run the login again; check the client id if it keeps failing",
                ) from None
            return dict(token)
    finally:
        ui.countdown_done()


class _JsonPollError(Exception):
    """An OAuth error answered to a JSON poll, shaped as authlib's (``error``, ``description``) for one handler."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(error)
        self.error, self.description = error, description


def _fetch_json(oc: Any, token_url: str, device_code: str) -> dict[str, Any]:
    """One JSON-body poll: the token response, or the endpoint's OAuth error raised as :class:`_JsonPollError`."""
    import json

    response = oc.request(
        "POST",
        token_url,
        json={"device_code": device_code},
        headers={"Accept": "application/json"},
        withhold_token=True,
    )
    if response.status_code >= 500:
        response.raise_for_status()  # httpx.HTTPStatusError: backed off and retried like a network failure
    data = json.loads(response.content)  # not JSON: ValueError, retried
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if response.status_code == 200 and "access_token" in data:
        return data
    raise _JsonPollError(
        str(data.get("error") or f"HTTP {response.status_code}"), str(data.get("error_description", ""))
    )


def _wait(
    interval: float, deadline: float, ui: FlowUI, clock: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    """Sleep ``interval`` seconds (not past ``deadline``), updating the countdown about once a second."""
    until = min(clock() + interval, deadline)
    while (left := until - clock()) > 0:
        ui.countdown("Waiting for you to approve the sign-in", max(0.0, deadline - clock()))
        sleep(min(1.0, left))


def _expired(display_name: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"the {display_name} device code expired before the sign-in was approved",
        "run the login again and approve it within the time shown",
    )
