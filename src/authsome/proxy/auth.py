"""Proxy authentication: only the child, which holds the per-run credential, may use the proxy.

A CONNECT or plain request without ``Proxy-Authorization: Basic <user:token>`` gets ``407`` and no upstream
connection (mitmproxy opens none when a CONNECT already has a response). A tunnel authenticated by its CONNECT stays
authenticated for the requests inside it.
"""

from __future__ import annotations

from mitmproxy import connection, http

from authsome.proxy.relay import basic_auth_ok

REALM = "authsome"


class ProxyAuth:
    """mitmproxy addon: 407 for anything that does not carry the per-run proxy credential."""

    def __init__(self, user: str, token: str) -> None:
        self._expected = f"{user}:{token}".encode()
        self._tunnels: set[str] = set()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self._authenticate(flow):
            self._tunnels.add(flow.client_conn.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.client_conn.id not in self._tunnels:
            self._authenticate(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.discard(client.id)

    def _authenticate(self, flow: http.HTTPFlow) -> bool:
        if self.valid(flow.request.headers.get("Proxy-Authorization", "")):
            del flow.request.headers["Proxy-Authorization"]
            return True
        flow.response = http.Response.make(
            407,
            b"authsome: this proxy serves only the command started by `authsome run`\n",
            {"Proxy-Authenticate": f'Basic realm="{REALM}"', "Content-Type": "text/plain"},
        )
        return False

    def valid(self, header: str) -> bool:
        """Whether ``header`` is ``Basic`` auth carrying exactly the expected user and token."""
        return basic_auth_ok(header, self._expected)
