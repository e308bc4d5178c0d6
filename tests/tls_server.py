"""A stand-in HTTP(S) server for the tests, on 127.0.0.1:<free port>, served on a thread for a ``with`` block.

Each connection gets a worker thread, and the TLS handshake happens there: a client that connects and never sends its
ClientHello stalls only its own connection, never the accept loop. Subclasses attach what their handler records::

    class _Server(TlsStandIn):
        def __init__(self, context: ssl.SSLContext) -> None:
            super().__init__(_Handler, context)
            self.state = Seen(self.port)

    with on_thread(_Server(context)) as server:
        ...
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer
from typing import Any, TypeVar

Server = TypeVar("Server", bound=BaseServer)


class TlsStandIn(ThreadingHTTPServer):
    """``handler`` over TLS with ``context`` (None: plain HTTP), on a free loopback port."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def accepted(self) -> None:
        """Called on the worker thread for each accepted connection, before the handshake (override to count)."""

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake on the worker thread, then serve; a failed handshake just ends the connection."""
        self.accepted()
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body are often two writes
        if self.context is None:
            return super().finish_request(request, client_address)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)  # (the raw socket was detached by wrap_socket)


def record_sni(sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
    """An ``sni_callback`` that keeps the server name the client asked for on the socket (``connection.sni``)."""
    sock.sni = name


@contextmanager
def on_thread(server: Server) -> Iterator[Server]:
    """Serve ``server`` on a daemon thread for the block; then shut it down and close it, whatever happened."""
    thread = threading.Thread(target=server.serve_forever, name="test-stand-in", daemon=True)
    try:
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            thread.join(10)
    finally:
        server.server_close()
