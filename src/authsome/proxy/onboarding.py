"""``http://mitm.it`` through the proxy: mitmproxy's CA install page, loaded on the first visit only.

The page is mitmproxy's own onboarding app (OS detection, the CA in PEM/P12/CER form); its web framework costs start-up
time, so it is imported when somebody asks for the page rather than on every ``authsome run``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from mitmproxy import ctx, http

APP_HOST = "mitm.it"


class LazyOnboarding:
    """mitmproxy addon: serves ``mitm.it`` from the proxy itself (no upstream connection is made)."""

    def __init__(self) -> None:
        self._app: Any = None

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        request = flow.request
        if flow.response is not None or request.scheme != "http" or request.pretty_host != APP_HOST:
            return None  # the page is served over plain HTTP only: no HTTPS tunnel to mitm.it is intercepted
        return self._serve(flow)

    async def _serve(self, flow: http.HTTPFlow) -> None:
        if self._app is None:
            from mitmproxy.addons.asgiapp import WSGIApp
            from mitmproxy.addons.onboardingapp import app

            app.config["CONFDIR"] = ctx.options.confdir
            self._app = WSGIApp(app, APP_HOST, None)
        await self._app.request(flow)
