"""The tests' own TLS stand-in (tests/tls_server.py) does what the suites that share it count on."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import trustme
from tests.tls_server import TlsStandIn, on_thread, record_sni


class _Hello(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        sni = getattr(self.request, "sni", None)
        body = f"hello {sni}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("api.test", "other.test").configure_cert(server)
    server.sni_callback = record_sni
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _get(port: int, name: str, client: ssl.SSLContext) -> str:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=10)
    conn.sock = client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=name)
    conn.request("GET", "/")
    return conn.getresponse().read().decode()


def test_a_client_that_never_says_hello_stalls_only_its_own_connection(ca: trustme.CA) -> None:
    server_context, client = _contexts(ca)
    with on_thread(TlsStandIn(_Hello, server_context)) as server:
        silent = socket.create_connection(("127.0.0.1", server.port))  # connects, never sends its ClientHello
        try:
            assert _get(server.port, "api.test", client) == "hello api.test"
            assert _get(server.port, "other.test", client) == "hello other.test"  # the name each client asked for
        finally:
            silent.close()


def test_a_failed_handshake_ends_that_connection_and_the_server_goes_on(ca: trustme.CA) -> None:
    server_context, client = _contexts(ca)
    with on_thread(TlsStandIn(_Hello, server_context)) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")  # plain HTTP to a TLS port
            raw.settimeout(10)
            try:
                answer = raw.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed (or reset) without an HTTP answer
        assert _get(server.port, "api.test", client) == "hello api.test"


def test_plain_http_without_a_context() -> None:
    with on_thread(TlsStandIn(_Hello, None)) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello None"


def test_the_server_is_shut_down_and_closed_even_when_the_block_fails(ca: trustme.CA) -> None:
    server_context, _ = _contexts(ca)
    server = TlsStandIn(_Hello, server_context)
    others = set(_serving())  # (other tests' stand-ins may be serving in this process)
    with pytest.raises(RuntimeError), on_thread(server):
        assert len(set(_serving()) - others) == 1
        raise RuntimeError("the test failed")
    assert server.socket.fileno() == -1  # closed
    assert set(_serving()) - others == set()  # and its thread is gone


def _serving() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "test-stand-in" and t.is_alive()]
