"""A one-shot browser form on 127.0.0.1 for a secret (an API key, an OAuth client secret).

The page lives behind a random path token; its POST must carry the page's CSRF token, come from the page's own origin
(``Origin``/``Sec-Fetch-Site``) and be form-encoded. A value the validator refuses re-shows the form with the reason
(never the value); the first valid value ends the flow and the listener closes. The secret never appears in a URL.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows import pages
from authsome.flows.loopback import OneShotServer, Reply, Request, new_token, tokens_equal
from authsome.flows.ui import FlowUI
from authsome.secret import Secret

FORM_TIMEOUT = 300.0
Validator = Callable[[str], Secret]


def ask_in_browser(
    ui: FlowUI, *, what: str, validate: Validator, timeout: float = FORM_TIMEOUT, port: int = 0, hint: str
) -> Secret:
    """Serve the form, open it (or print its URL), and wait for one valid value; ``hint`` goes with a timeout."""
    form = SecretForm(what, validate)
    with OneShotServer(form.handle, port=port) as server:
        form.bind(server)
        url = server.url(form.path)
        if ui.open_browser(url):
            ui.info(f"A browser window asks for your {what} (or open {url})")
        else:
            ui.info(f"Open this page to enter your {what}: {url}")
        try:
            return server.wait(timeout)
        except TimeoutError:
            raise AuthenticationFailed(f"no {what} was entered within {int(timeout)} seconds", hint) from None


class SecretForm:
    """The request handler: GET shows the form, a valid POST ends the flow, anything else is refused."""

    def __init__(self, what: str, validate: Validator) -> None:
        self.what = what
        self.validate = validate
        self.csrf = new_token()
        self.path = "/"
        self.origins: tuple[str, ...] = ()

    def bind(self, server: OneShotServer[Secret]) -> None:
        self.path = f"/{server.token}/"
        self.origins = (f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}")

    def handle(self, request: Request) -> Reply[Secret]:
        if request.path != self.path:
            return Reply(404, pages.done_page("Not found", "There is nothing here."))
        if request.method == "GET":
            return Reply(200, self._form())
        if not self._same_origin(request) or not tokens_equal(request.form.get("csrf"), self.csrf):
            return Reply(403, pages.done_page("Refused", "This form submission did not come from the authsome page."))
        try:
            value = self.validate(request.form.get("secret", ""))
        except UsageError as exc:
            return Reply(400, self._form(error=exc.message))
        page = pages.done_page("Received", f"authsome received your {self.what}.")
        return Reply(200, page, result=value)

    def _same_origin(self, request: Request) -> bool:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        # Browsers send "Origin: null" for a page served with Referrer-Policy: no-referrer; Sec-Fetch-Site vouches.
        return origin is None or origin in self.origins or (origin == "null" and site == "same-origin")

    def _form(self, error: str | None = None) -> str:
        error_html = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        return pages.render("secret_form.html", what=self.what, csrf=self.csrf, error_html=error_html)
