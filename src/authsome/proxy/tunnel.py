"""Connection-level decisions: which CONNECT tunnels are decrypted, upstream SNI, and where sockets really go.

* Each tunnel's CONNECT target is recorded (canonical host, port); it is the destination every later check uses.
* A tunnel is TLS-intercepted only when some route could match its CONNECT target; every other tunnel is relayed
  byte for byte (the client sees the real server and its certificate).
* Upstream SNI is always the CONNECT host, never a name the client put in its own ClientHello.
* A chained upstream proxy gets its credentials on CONNECT and on plain-HTTP requests.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from mitmproxy import connection, http, tls
from mitmproxy.proxy import layer, layers, mode_specs

from authsome.providers.hosts import canonical_host
from authsome.proxy.routing import Router

Address = tuple[str, int]


class Targets:
    """CONNECT target of each live client connection, by client id (shared by the addons)."""

    def __init__(self) -> None:
        self._by_client: dict[str, Address] = {}

    def set(self, client_id: str, target: Address) -> None:
        self._by_client[client_id] = target

    def get(self, client_id: str) -> Address | None:
        return self._by_client.get(client_id)

    def drop(self, client_id: str) -> None:
        self._by_client.pop(client_id, None)

    def __len__(self) -> int:
        return len(self._by_client)


class Tunnels:
    """mitmproxy addon: selective interception, upstream SNI, upstream proxy credentials."""

    def __init__(
        self,
        router: Router,
        targets: Targets,
        *,
        upstream_auth: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.router = router
        self.targets = targets
        self.log = log
        self._upstream_auth = "Basic " + base64.b64encode(upstream_auth.encode()).decode() if upstream_auth else None

    # -- CONNECT -------------------------------------------------------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # refused (407) before us
            return
        try:
            target = (canonical_host(flow.request.host), flow.request.port)
        except ValueError:
            return  # no target recorded: relayed, never intercepted
        self.targets.set(flow.client_conn.id, target)

    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        if self._upstream_auth:
            flow.request.headers["Proxy-Authorization"] = self._upstream_auth

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Plain-HTTP requests sent through a chained upstream proxy carry its credentials."""
        if (
            self._upstream_auth
            and flow.response is None
            and flow.request.scheme == "http"
            and isinstance(flow.client_conn.proxy_mode, mode_specs.UpstreamMode)
        ):
            flow.request.headers["Proxy-Authorization"] = self._upstream_auth

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """First decision inside a tunnel: relay it untouched unless a route could match its target."""
        client = nextlayer.context.client
        target = self.targets.get(client.id)
        if nextlayer.layer is not None or target is None:
            return  # decided already, or the proxy connection itself (before any CONNECT)
        if not self.router.intercepts(*target):
            if self.log:
                self.log(f"tunnel      {target[0]}:{target[1]} (no route: relayed untouched)")
            nextlayer.layer = layers.TCPLayer(nextlayer.context, ignore=True)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        target = self.targets.get(data.context.client.id)
        if target is None:
            return
        if not self.router.intercepts(*target):  # pragma: no cover - next_layer already relays these
            data.ignore_connection = True
            return
        data.context.server.sni = target[0]

    def client_disconnected(self, client: connection.Client) -> None:
        self.targets.drop(client.id)
