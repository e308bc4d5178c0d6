"""Connection-level facts inside mitmproxy: each tunnel's destination, upstream SNI, a chained proxy's credentials.

* Each tunnel's CONNECT target is recorded (canonical host, port); it is the destination every later check uses.
* Which tunnels are decrypted is decided once, by the :class:`~authsome.proxy.relay.FrontDoor`: it relays the
  tunnels no route of the asking principal could match itself, so every tunnel mitmproxy sees is intercepted.
* Upstream SNI is always the CONNECT host, never a name the client put in its own ClientHello.
* A chained upstream proxy gets its credentials on CONNECT and on plain-HTTP requests.
"""

from __future__ import annotations

import base64

from mitmproxy import connection, http, tls
from mitmproxy.proxy import mode_specs

from authsome.providers.hosts import canonical_host

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
    """mitmproxy addon: tunnel destinations, upstream SNI, upstream proxy credentials."""

    def __init__(self, targets: Targets, *, upstream_auth: str | None = None) -> None:
        self.targets = targets
        self._upstream_auth = "Basic " + base64.b64encode(upstream_auth.encode()).decode() if upstream_auth else None

    # -- CONNECT -------------------------------------------------------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # refused (407) before us
            return
        try:
            target = (canonical_host(flow.request.host), flow.request.port)
        except ValueError:
            return  # (the front door answers such a CONNECT itself)
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

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        target = self.targets.get(data.context.client.id)
        if target is not None:
            data.context.server.sni = target[0]

    def client_disconnected(self, client: connection.Client) -> None:
        self.targets.drop(client.id)
