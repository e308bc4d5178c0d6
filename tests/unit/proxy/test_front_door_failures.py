"""A tunnel the front door cannot open: a 502 to the CONNECT that says why, a ``--verbose`` line, an audit record.

Real loopback sockets; no mitmproxy (the front door relays unrouted tunnels itself).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from authsome.proxy.relay import FrontDoor, UpstreamProxy
from authsome.proxy.report import Reporter
from authsome.proxy.routing import Router

from .conftest import run_async

CREDENTIAL = b"authsome:test-token"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound, never listening, so that no other process
    can take it meanwhile (a port found free and let go could be another test's proxy by the time it is used)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@pytest.fixture
def refusing_proxy() -> Iterator[int]:
    """A chained proxy that answers every CONNECT with 407."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()  # run on a thread of its own: a session-wide Playwright loop may run on this one
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(asyncio.start_server(answer, "127.0.0.1", 0), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    yield port
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def connect_through(front: FrontDoor, target: str) -> tuple[bytes, dict[str, str], dict[str, object]]:
    async def go() -> tuple[bytes, dict[str, str], dict[str, object]]:
        port = await front.start(("127.0.0.1", 1))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            auth = base64.b64encode(CREDENTIAL).decode()
            writer.write(
                f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.read()
            writer.close()
        finally:
            front.close()
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        return lines[0].encode(), headers, json.loads(body)

    return run_async(go())


def test_an_unreachable_target_is_a_502_with_the_cause_reported(closed_port: int) -> None:
    lines: list[str] = []
    records: list[dict[str, object]] = []
    reporter = Reporter(verbose=True, audit=records.append, write=lines.append)
    port = closed_port
    status, headers, body = connect_through(FrontDoor(Router([]), CREDENTIAL, reporter=reporter), f"127.0.0.1:{port}")
    assert status == f"HTTP/1.1 502 authsome: cannot reach 127.0.0.1:{port} (connection refused)".encode()
    assert headers["x-authsome-error"] == "upstream_unreachable" and headers["content-type"] == "application/json"
    assert body["reason"] == f"cannot reach 127.0.0.1:{port} (connection refused)"
    assert lines == [
        f"authsome: refused     - CONNECT 127.0.0.1:{port} (upstream_unreachable: cannot reach 127.0.0.1:{port} "
        "(connection refused))"
    ]
    assert [(r["decision"], r["method"], r["port"], r["status"]) for r in records] == [
        ("refused", "CONNECT", port, 502)
    ]


def test_a_chained_proxy_that_is_down_or_refuses_is_named(refusing_proxy: int, closed_port: int) -> None:
    down = closed_port
    front = FrontDoor(Router([]), CREDENTIAL, upstream=UpstreamProxy("http", ("127.0.0.1", down)))
    _, _, body = connect_through(front, "example.com:443")
    assert body["reason"] == f"cannot reach example.com:443 (the upstream proxy 127.0.0.1:{down}: connection refused)"
    front = FrontDoor(Router([]), CREDENTIAL, upstream=UpstreamProxy("http", ("127.0.0.1", refusing_proxy), "u:p"))
    _, _, body = connect_through(front, "example.com:443")
    assert body["reason"] == (
        f"cannot reach example.com:443 (the upstream proxy 127.0.0.1:{refusing_proxy} answered 407 Proxy "
        "Authentication Required)"
    )
