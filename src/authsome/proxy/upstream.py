"""Upstream connections that fail in words: bounded connects and TLS handshakes, one sentence per cause.

mitmproxy opens its upstream sockets with ``asyncio.open_connection``: no time limit, and a failure is whatever
``str(OSError)`` says. :class:`Connector` wraps the proxy loop's ``create_connection`` (the front door's tunnels use it
too): a connect, DNS lookup included, gives up after :data:`CONNECT_TIMEOUT` seconds, and every failure becomes an
:class:`UpstreamError` whose text names the cause (``DNS lookup failed: …``, ``connection refused``, ``no answer
within 30 s``, or the same about the chained upstream proxy). It also keeps each live socket by its local address,
so that :class:`UpstreamHandshakes` (a mitmproxy addon) can close an upstream that accepted the TCP connection but
never answers the TLS handshake. mitmproxy's own connections (stream protocols) are :mod:`corked
<authsome.proxy.cork>`. No mitmproxy import here: the addon's hooks take mitmproxy's objects as they come.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import weakref
from collections.abc import Callable
from typing import Any

from authsome.providers.hosts import split_host_port
from authsome.proxy.cork import CorkedTransport

CONNECT_TIMEOUT = 30.0  # seconds for DNS + TCP connect (+ TLS to an https:// upstream proxy)
HANDSHAKE_TIMEOUT = 30.0  # seconds for an upstream server to finish the TLS handshake
Address = tuple[str, int]


class UpstreamError(OSError):
    """A connection that could not be made; ``str()`` is the one-line cause (what mitmproxy shows as the error)."""


def describe(exc: BaseException, timeout: float) -> str:
    """The cause of a failed connect, in words (no host: the caller says which host it was)."""
    if isinstance(exc, UpstreamError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def verdict(cause: str) -> tuple[str, str]:
    """The error code and the fix for an upstream that failed with ``cause`` (as :func:`describe` or mitmproxy
    word it): a certificate nobody trusts, or anything else that kept the upstream out of reach."""
    if "certificate verify failed" in cause.lower():
        return (
            "upstream_untrusted",
            "if you trust it, pass --upstream-ca FILE or set SSL_CERT_FILE to a bundle holding its CA",
        )
    return "upstream_unreachable", "check the network, DNS and any upstream proxy"


def proxy_address(url: str | None) -> Address | None:
    """``(host, port)`` of a chained proxy as :func:`authsome.proxy.runner.upstream_proxy` writes it
    (``scheme://host:port``, IPv6 in brackets), read by the one ``host:port`` reader."""
    if not url:
        return None
    return split_host_port(url.partition("://")[2])


class Connector:
    """``loop.create_connection`` with a time limit, failures in words, and live sockets by local address."""

    def __init__(self, upstream_proxy: Address | None = None) -> None:
        self.upstream_proxy = upstream_proxy
        self._real: Callable[..., Any] | None = None
        self._live: weakref.WeakValueDictionary[Address, asyncio.BaseTransport] = weakref.WeakValueDictionary()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._real = loop.create_connection
        loop.create_connection = self.create_connection  # type: ignore[method-assign,assignment]

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        assert self._real is not None
        timeout = CONNECT_TIMEOUT
        try:
            transport, protocol = await asyncio.wait_for(self._real(protocol_factory, host, port, **kwargs), timeout)
        except (OSError, TimeoutError) as exc:
            cause = describe(exc, timeout)
            if host is not None and port is not None and self._is_proxy(host, port):
                cause = f"the upstream proxy {host}:{port}: {cause}"
            raise UpstreamError(cause) from None
        if isinstance(protocol, asyncio.StreamReaderProtocol) and isinstance(transport, asyncio.Transport):
            transport = CorkedTransport(transport, asyncio.get_running_loop())  # mitmproxy's (see authsome.proxy.cork)
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple):
            self._live[(sockname[0], sockname[1])] = transport
        return transport, protocol

    def transport(self, sockname: Any) -> asyncio.BaseTransport | None:
        """The live transport whose local address is ``sockname``."""
        if not isinstance(sockname, tuple) or len(sockname) < 2:
            return None
        return self._live.get((sockname[0], sockname[1]))

    def _is_proxy(self, host: str, port: int) -> bool:
        proxy = self.upstream_proxy
        return proxy is not None and proxy[1] == port and proxy[0].strip("[]").lower() == host.strip("[]").lower()


class UpstreamHandshakes:
    """mitmproxy addon: every failed upstream TLS handshake says so, and none takes longer than HANDSHAKE_TIMEOUT.

    Without the time limit, a server that accepts the TCP connection and then says nothing holds the child's request
    forever: the socket is closed instead. The connection's error then reads ``TLS handshake failed: <cause>``, which
    the request's error response shows; this addon must come before any addon that reads that error.
    """

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._expired: dict[str, float] = {}

    def tls_start_server(self, data: Any) -> None:
        conn = data.conn
        transport = self.connector.transport(conn.sockname)
        if transport is None:
            return
        timeout = HANDSHAKE_TIMEOUT
        loop = asyncio.get_running_loop()
        self._timers[conn.id] = loop.call_later(timeout, self._expire, conn.id, transport, timeout)

    def tls_established_server(self, data: Any) -> None:
        self._disarm(data.conn.id)

    def tls_failed_server(self, data: Any) -> None:
        self._disarm(data.conn.id)
        timeout = self._expired.pop(data.conn.id, None)
        cause = f"no answer within {timeout:g} s" if timeout is not None else str(data.conn.error or "no reason given")
        data.conn.error = f"TLS handshake failed: {cause}"

    def server_disconnected(self, data: Any) -> None:
        self._disarm(data.server.id)  # (``_expired`` waits for tls_failed_server, which may come after this)

    def _expire(self, conn_id: str, transport: asyncio.BaseTransport, timeout: float) -> None:
        self._timers.pop(conn_id, None)
        self._expired[conn_id] = timeout
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()

    def _disarm(self, conn_id: str) -> None:
        timer = self._timers.pop(conn_id, None)
        if timer is not None:
            timer.cancel()
