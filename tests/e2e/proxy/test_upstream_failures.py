"""When the upstream cannot be reached: authsome's own error for the child, a ``--verbose`` line, an audit record.

Every cause on real loopback sockets: a name that does not resolve, a closed port, a host that never answers the
connect (a listener whose accept queue is full), one that accepts and never answers the TLS handshake, a certificate
from a CA nobody trusts, a chained proxy that is down or refuses the tunnel. A request to an intercepted host is
answered with JSON; a tunnel to an unrouted host can only fail its CONNECT: a 502 whose reason phrase says why.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from authsome.proxy import upstream

from .conftest import RunFn, StandIn, py

pytestmark = pytest.mark.e2e

INTERCEPTED = "https://api.openai.com/v1/models"
TUNNELLED = "https://www.example.org/"  # served by the stand-in too, but claimed by no provider: never intercepted


@dataclass
class Cause:
    """One way to fail: what the run is given, and the words the child and the log must show."""

    name: str
    words: str
    code: str = "upstream_unreachable"
    resolve: str | None = None  # where the host's sockets go instead of the stand-in
    upstream_proxy: str | None = None
    trust_test_ca: bool = True


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "CONNECT_TIMEOUT", 1.0)
    monkeypatch.setattr(upstream, "HANDSHAKE_TIMEOUT", 1.0)


@pytest.fixture
def full_port() -> Iterator[int]:
    """A port whose accept queue is full: a connect gets no answer, as from a host that drops packets."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue; never accepted
            yield port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody ever answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield listener.getsockname()[1]


@pytest.fixture
def refusing_proxy() -> Iterator[int]:
    """A chained proxy that answers every CONNECT with 407."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def untrusted_tls_proxy() -> Iterator[int]:
    """An ``https://`` chained proxy whose certificate comes from a CA nobody trusts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(65536)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def refused_ports() -> Iterator[tuple[int, int]]:
    """Two loopback ports that refuse connections for the whole test: bound, never listening, so no other process (a
    run's proxy picking an ephemeral port, say) can take them meanwhile."""
    held = [socket.socket() for _ in range(2)]
    for sock in held:
        sock.bind(("127.0.0.1", 0))
    yield held[0].getsockname()[1], held[1].getsockname()[1]
    for sock in held:
        sock.close()


@pytest.fixture
def causes(
    full_port: int,
    silent_port: int,
    refusing_proxy: int,
    untrusted_tls_proxy: int,
    plain_server: StandIn,
    short_timeouts: None,
    refused_ports: tuple[int, int],
) -> dict[str, Cause]:
    down, closed = refused_ports
    return {
        c.name: c
        for c in [
            Cause("dns", "(DNS lookup failed: ", resolve="nothing.invalid:443"),
            Cause("refused", "(connection refused)", resolve=f"127.0.0.1:{closed}"),
            Cause("connect-timeout", "(no answer within 1 s)", resolve=f"127.0.0.1:{full_port}"),
            Cause(
                "handshake-timeout", "(TLS handshake failed: no answer within 1 s)", resolve=f"127.0.0.1:{silent_port}"
            ),
            Cause("not-tls", "(TLS handshake failed: ", resolve=f"127.0.0.1:{plain_server.port}"),
            Cause(
                "untrusted",
                "is not trusted (TLS handshake failed: Certificate verify failed",
                "upstream_untrusted",
                trust_test_ca=False,
            ),
            Cause(
                "proxy-down",
                f"(the upstream proxy 127.0.0.1:{down}: connection refused)",
                upstream_proxy=f"http://127.0.0.1:{down}",
            ),
            Cause(
                "proxy-untrusted",
                f"(the upstream proxy 127.0.0.1:{untrusted_tls_proxy}: TLS handshake failed: ",
                "upstream_untrusted",
                upstream_proxy=f"https://127.0.0.1:{untrusted_tls_proxy}",
            ),
            Cause(
                "proxy-refuses",
                "407 Proxy Authentication Required",
                upstream_proxy=f"http://corp:wrong@127.0.0.1:{refusing_proxy}",
            ),
        ]
    }


def go(run: RunFn, cause: Cause, host: str, command: list[str]) -> tuple[Any, list[dict[str, object]]]:
    records: list[dict[str, object]] = []
    # the chained proxy as the user's environment names it: a gateway started there chains through it too
    extra: dict[str, Any] = {"env": {"HTTPS_PROXY": cause.upstream_proxy} if cause.upstream_proxy else {}}
    if cause.resolve:
        extra["resolve"] = {f"{host}:443": cause.resolve}
    result = run(command, verbose=True, audit=records.append, trust_test_ca=cause.trust_test_ca, **extra)
    return result, records


@pytest.mark.parametrize(
    "name",
    [
        "dns",
        "refused",
        "connect-timeout",
        "handshake-timeout",
        "not-tls",
        "untrusted",
        "proxy-down",
        "proxy-untrusted",
        "proxy-refuses",
    ],
)
def test_intercepted_request_gets_json_naming_the_cause(
    run: RunFn, standin: StandIn, causes: dict[str, Cause], name: str
) -> None:
    cause = causes[name]
    command = ["curl", "-sS", "-w", "\n%{http_code} %header{x-authsome-error}", INTERCEPTED]
    result, records = go(run, cause, "api.openai.com", command)
    body, _, status = result.out.rpartition("\n")
    assert status == f"502 {cause.code}", result.out
    error = json.loads(body)
    assert error["error"]["code"] == cause.code and error["provider"] == "openai"
    assert cause.words in str(error["reason"]) and "api.openai.com:443" in str(error["reason"])
    assert str(error["reason"]) in error["error"]["message"]
    line = f"refused     openai/default GET api.openai.com/v1/models ({cause.code}: {error['reason']})"
    assert line in result.err
    assert [(r["decision"], r["status"], r["reason"]) for r in records] == [
        ("refused", 502, f"{cause.code}: {error['reason']}")
    ]
    assert result.headers_for.calls == [] and standin.seen == []  # no credential read, nothing sent


@pytest.mark.parametrize(
    "name", ["dns", "refused", "connect-timeout", "proxy-down", "proxy-untrusted", "proxy-refuses"]
)
def test_failed_tunnel_gets_a_502_connect_naming_the_cause(
    run: RunFn, standin: StandIn, causes: dict[str, Cause], name: str
) -> None:
    cause = causes[name]
    result, _ = go(
        run, cause, "www.example.org", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_connect}", TUNNELLED]
    )
    assert result.out == "502"
    assert f"refused     - CONNECT www.example.org ({cause.code}: cannot reach www.example.org:443 " in result.err
    assert cause.words in result.err
    assert standin.seen == []


def test_python_clients_see_the_cause(run: RunFn, standin: StandIn, refused_ports: tuple[int, int]) -> None:
    """requests shows a failed CONNECT's reason phrase; httpx gets the intercepted request's JSON."""
    script = f"""
import httpx, requests
try:
    requests.get("{TUNNELLED}", timeout=10)
except requests.exceptions.ProxyError as exc:
    print("requests:", exc)
response = httpx.get("{INTERCEPTED}", timeout=10)
print("httpx:", response.status_code, response.json()["error"]["message"])
"""
    closed = refused_ports[0]
    resolve = {"www.example.org:443": f"127.0.0.1:{closed}", "api.openai.com:443": f"127.0.0.1:{closed}"}
    result = run(py(script), resolve=resolve)
    assert "502 authsome: cannot reach www.example.org:443 (connection refused)" in result.out
    assert "httpx: 502 authsome: cannot reach the upstream server api.openai.com:443 (connection refused)" in result.out


def test_a_failed_tunnel_is_audited(run: RunFn, standin: StandIn, refused_ports: tuple[int, int]) -> None:
    records: list[dict[str, object]] = []
    resolve = {"www.example.org:443": f"127.0.0.1:{refused_ports[0]}"}
    result = run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_connect}", TUNNELLED], resolve=resolve, audit=records.append
    )
    assert result.out == "502"
    assert [(r["decision"], r["method"], r["host"], r["port"], r["status"]) for r in records] == [
        ("refused", "CONNECT", "www.example.org", 443, 502)
    ]
    assert "connection refused" in str(records[0]["reason"])


def test_a_plain_http_request_that_fails_says_how_it_ended(run: RunFn, refused_ports: tuple[int, int]) -> None:
    records: list[dict[str, object]] = []
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://api.openai.com/v1/models"]
    resolve = {"api.openai.com:80": f"127.0.0.1:{refused_ports[0]}"}
    result = run(command, resolve=resolve, verbose=True, audit=records.append)
    assert result.out == "502"
    assert "passthrough - GET api.openai.com:80/v1/models (plain-http): failed: connection refused" in result.err
    assert [r["reason"] for r in records] == ["plain-http; error: connection refused"]
