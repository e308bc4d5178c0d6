"""A corporate proxy already in the parent's environment is chained, not bypassed."""

from __future__ import annotations

import base64
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from .conftest import GATEWAY, HOSTS, SECRETS, RunFn, StandIn

pytestmark = pytest.mark.e2e


@dataclass
class CorpProxy:
    """A minimal CONNECT proxy that requires Basic credentials and maps host names to the stand-ins."""

    port: int
    routes: dict[tuple[str, int], int]
    seen: list[tuple[str, str | None]] = field(default_factory=list)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    sockets = [a, b]
    while True:
        readable, _, _ = select.select(sockets, [], [], 10)
        if not readable:
            return
        for s in readable:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


def _handle(conn: socket.socket, proxy: CorpProxy) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        auth = headers.get("proxy-authorization")
        proxy.seen.append((f"{method} {target}", auth))
        if auth != "Basic " + base64.b64encode(b"corp:s3cret").decode():
            conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            return
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")
            return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection(("127.0.0.1", proxy.routes[(host, int(port))]))
        with upstream:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _pipe(conn, upstream)


@pytest.fixture
def corp_proxy(tls_server: StandIn) -> Iterator[CorpProxy]:
    listener = socket.create_server(("127.0.0.1", 0))
    proxy = CorpProxy(listener.getsockname()[1], {(h, 443): tls_server.port for h in HOSTS})

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_handle, args=(conn, proxy), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield proxy
    listener.close()


@pytest.mark.parametrize("how", ["environment", "option"])
def test_requests_go_through_the_corporate_proxy(run: RunFn, standin: StandIn, corp_proxy: CorpProxy, how: str) -> None:
    url = f"http://corp:s3cret@127.0.0.1:{corp_proxy.port}"
    env = {"HTTPS_PROXY": url} if how == "environment" else {}
    script = "curl -sS --fail https://api.openai.com/v1/models >/dev/null && curl -sS --fail https://www.example.org/x"
    result = run(["sh", "-c", script], env=env, upstream_proxy=url if how == "option" else None)
    assert result.code == 0, result.err
    assert [line for line, _ in corp_proxy.seen] == ["CONNECT api.openai.com:443", "CONNECT www.example.org:443"]
    assert all(auth == "Basic " + base64.b64encode(b"corp:s3cret").decode() for _, auth in corp_proxy.seen)
    assert standin.seen[0].headers["authorization"] == f"Bearer {SECRETS['openai']}-default"
    assert "authorization" not in standin.seen[1].headers
    assert not [h for s in standin.seen for h in s.headers if h.startswith("proxy-")]


def test_a_refusing_corporate_proxy_is_reported(run: RunFn, standin: StandIn, corp_proxy: CorpProxy) -> None:
    env = {"HTTPS_PROXY": f"http://corp:wrong@127.0.0.1:{corp_proxy.port}"}
    script = 'curl -sS -o /dev/null -w "%{http_connect}" https://www.example.org/; true'
    result = run(["sh", "-c", script], env=env)
    assert result.out == "502"
    assert corp_proxy.seen and standin.seen == []


def test_plain_http_goes_through_the_corporate_proxy_with_its_credentials(run: RunFn, corp_proxy: CorpProxy) -> None:
    env = {"HTTPS_PROXY": f"http://corp:s3cret@127.0.0.1:{corp_proxy.port}"}
    result = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://api.openai.com/v1/models"], env=env)
    assert result.out == "501"  # the stand-in corporate proxy only does CONNECT; what matters is what it saw
    assert corp_proxy.seen == [
        ("GET http://api.openai.com/v1/models", "Basic " + base64.b64encode(b"corp:s3cret").decode())
    ]


def test_a_gateway_that_chains_elsewhere_never_serves_the_run(
    run: RunFn, standin: StandIn, corp_proxy: CorpProxy, mode: str
) -> None:
    """The user's gateway was started without the corporate proxy: a run whose environment names it starts its own
    proxy, which chains through it, rather than being served by a gateway that would bypass it."""
    if mode != GATEWAY:
        pytest.skip("about a running gateway started in another environment than the run")
    env = {"HTTPS_PROXY": f"http://corp:s3cret@127.0.0.1:{corp_proxy.port}"}
    result = run(
        ["curl", "-sS", "--fail", "https://api.openai.com/v1/models"],
        env=env,
        gateway_env={"HTTPS_PROXY": ""},
        verbose=True,
    )
    assert result.code == 0, result.err
    assert result.served_by == "own proxy"
    chained = f"http://127.0.0.1:{corp_proxy.port}"
    assert f"not served by the gateway (this run chains through {chained}, the gateway through none)" in result.err
    assert [line for line, _ in corp_proxy.seen] == ["CONNECT api.openai.com:443"]
    assert standin.last().headers["authorization"] == f"Bearer {SECRETS['openai']}-default"
