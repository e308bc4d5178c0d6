"""Authorization code + PKCE (RFC 7636, S256) with a one-shot loopback redirect (RFC 8252).

The redirect listener binds ``127.0.0.1:7999`` by default (a fixed port, so it can be registered with providers that
want an exact redirect URI: ``http://127.0.0.1:7999/callback``, the value authsome documents, so OAuth apps made for
it keep working; ``redirect_port`` overrides it, 0 picks a free one) and serves ``/callback``. A redirect
whose ``state`` is wrong is refused with a 400 and ignored; the login keeps waiting for the real one. When the browser
cannot reach the listener (SSH, another machine) an interactive user can paste the URL the browser ended on, or just
the code: it goes through the same checks (a bare code is bound to this login by the PKCE verifier). The listener is
closed before the code is exchanged. The code and the verifier never appear in a log or a message.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from authsome.errors import AuthenticationFailed
from authsome.flows import pages
from authsome.flows.http import http_errors, network_failure, oauth_client, oauth_error, safe_text
from authsome.flows.loopback import OneShotServer, Reply, Request, new_token, tokens_equal
from authsome.models import ClientConfig
from authsome.secret import Secret

if TYPE_CHECKING:
    from authsome.flows.discovery import Endpoints
    from authsome.flows.ui import FlowUI

DEFAULT_REDIRECT_PORT = 7999
CALLBACK_PATH = "/callback"
LOGIN_TIMEOUT = 300.0
_CODE = re.compile(r"[\x21-\x7e]{1,4096}")


def authorize(
    endpoints: Endpoints,
    *,
    display_name: str,
    get_client: Callable[[str], ClientConfig],
    scopes: Sequence[str],
    ui: FlowUI,
    no_browser: bool = False,
    redirect_port: int | None = None,
    timeout: float = LOGIN_TIMEOUT,
    extra_params: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], ClientConfig]:
    """Run the browser sign-in and exchange the code; return the raw token response and the client used.

    ``get_client(redirect_uri)`` supplies the client once the listener's redirect URI is known (dynamic registration
    needs it). ``extra_params`` are added to the authorization request (a provider's ``oauth.authorization_params``).
    """
    auth_url = endpoints.require("authorization")
    token_url = endpoints.require("token")
    state = new_token()
    verifier = secrets.token_urlsafe(64)  # 86 characters from the unreserved set (RFC 7636 section 4.1)
    callback = _Callback(state, endpoints.issuer, display_name, ui)
    port = DEFAULT_REDIRECT_PORT if redirect_port is None else redirect_port
    with OneShotServer(callback.handle, port=port) as server:
        redirect_uri = server.url(CALLBACK_PATH)
        client = get_client(redirect_uri)
        with oauth_client(client, redirect_uri=redirect_uri, code_challenge_method="S256") as oc:
            url, _ = oc.create_authorization_url(
                auth_url, state=state, code_verifier=verifier, scope=" ".join(scopes) or None, **(extra_params or {})
            )
        opened = False if no_browser else ui.open_browser(url)
        if opened:
            ui.info(f"Sign in to {display_name} in the browser window that opened (or open: {url})")
        else:
            ui.info(f"Open this URL to sign in to {display_name}:\n{url}")
        if not opened and ui.is_interactive:
            _start_paste_fallback(server, ui, state)
        try:
            code = server.wait(timeout)
        except TimeoutError:
            raise AuthenticationFailed(
                f"the sign-in to {display_name} did not finish within {int(timeout)} seconds",
                "run the login again; with --no-browser you can paste the URL the browser ends on",
            ) from None
    return _exchange(client, token_url, redirect_uri, code, verifier, display_name), client


def _exchange(
    client: ClientConfig, token_url: str, redirect_uri: str, code: Secret, verifier: str, display_name: str
) -> dict[str, Any]:

    with oauth_client(client, redirect_uri=redirect_uri) as oc:
        try:
            token = oc.fetch_token(
                token_url, grant_type="authorization_code", code=code.reveal(), code_verifier=verifier
            )
        except http_errors() as exc:
            raise network_failure("token endpoint", token_url, exc) from None
        except ValueError:
            raise AuthenticationFailed(
                f"the {display_name} token endpoint did not answer with JSON", "check oauth.token_url"
            ) from None
        except Exception as exc:
            parts = oauth_error(exc)
            if parts is None:
                raise
            error, description = (safe_text(p, [code, verifier, client.client_secret]) for p in parts)
            raise AuthenticationFailed(
                f"{display_name} refused the authorization code: {error}" + (f" ({description})" * bool(description)),
                "run the login again; if it keeps failing, check the client id and secret (--reset re-asks)",
            ) from None
    return dict(token)


class _Callback:
    """Handles requests to the redirect listener: wrong path 404, wrong state 400 (ignored), else the one shot."""

    def __init__(self, state: str, issuer: str | None, display_name: str, ui: FlowUI) -> None:
        self.state = state
        self.issuer = issuer
        self.name = display_name
        self.ui = ui

    def handle(self, request: Request) -> Reply[Secret]:
        if request.path != CALLBACK_PATH:
            return Reply(404, pages.done_page("Not found", "There is nothing here."))
        query = request.query
        if not tokens_equal(query.get("state"), self.state):
            self.ui.warn("ignored a sign-in response with a wrong or missing state (not from this login)")
            return Reply(
                400,
                pages.done_page(
                    "Sign-in refused", "This response does not belong to the login in progress, so authsome ignored it."
                ),
            )
        iss = query.get("iss")
        if iss is not None and self.issuer and iss.rstrip("/") != self.issuer.rstrip("/"):  # RFC 9207
            return self._fail(
                f"the sign-in response came from issuer {safe_text(iss, limit=80)!r}, not {self.issuer!r}",
                "check oauth.issuer in the provider definition",
            )
        if "error" in query:
            error = safe_text(query["error"], limit=60)
            description = safe_text(query.get("error_description", ""))
            if error == "access_denied":
                return self._fail(
                    f"the sign-in to {self.name} was denied" + (f" ({description})" if description else ""),
                    "run the login again and approve the access request",
                )
            return self._fail(
                f"{self.name} refused the authorization request: {error}"
                + (f" ({description})" if description else ""),
                "check the client id and scopes",
            )
        code = query.get("code", "")
        if not _CODE.fullmatch(code):
            return self._fail(
                f"the sign-in response from {self.name} has no usable authorization code", "run the login again"
            )
        page = pages.done_page("Signed in", f"authsome received the authorization for {self.name}.")
        return Reply(200, page, result=Secret(code))

    def _fail(self, message: str, hint: str) -> Reply[Secret]:
        page = pages.done_page("Sign-in failed", message)
        return Reply(200, page, error=AuthenticationFailed(message, hint))


def pasted_request(answer: str, state: str) -> Request | None:
    """Turn what the user pasted (the full redirect URL, its query, or the bare code) into a callback request."""
    text = answer.strip()
    if not text:
        return None
    if "://" in text:
        parts = urlsplit(text)
        return Request("GET", parts.path or CALLBACK_PATH, dict(parse_qsl(parts.query, keep_blank_values=True)))
    if "code=" in text or "error=" in text:
        return Request("GET", CALLBACK_PATH, dict(parse_qsl(text.lstrip("?"), keep_blank_values=True)))
    return Request("GET", CALLBACK_PATH, {"code": text, "state": state})  # PKCE binds a bare code to this login


def _start_paste_fallback(server: OneShotServer[Secret], ui: FlowUI, state: str) -> None:
    """Ask for a pasted URL/code on a daemon thread while the listener keeps waiting; the first to arrive wins."""

    def run() -> None:
        while not server.done:
            try:
                answer = ui.prompt("If the browser cannot reach this computer, paste the URL it ended on (or the code)")
            except Exception:  # no terminal, EOF, Ctrl-D: keep waiting for the listener
                return
            request = pasted_request(answer, state)
            if request is None or server.done:
                continue
            reply = server.offer(request)
            if reply.final:
                return
            ui.warn("that does not match this login; paste the full URL from the browser's address bar")

    threading.Thread(target=run, name="authsome-paste", daemon=True).start()
