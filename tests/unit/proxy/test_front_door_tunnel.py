"""The front door's tunnels to unrouted hosts, over real loopback sockets: bytes arrive intact both ways, half-closes
and resets reach the other side, a slow reader holds the sender back, and closing the front door ends live tunnels.

Each test runs twice: with the kernel relay (``splice(2)``) and with the asyncio relay used where splice is missing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from authsome.proxy import relay as relay_module
from authsome.proxy import splice
from authsome.proxy.relay import FrontDoor
from authsome.proxy.routing import Router

from .conftest import run_async

CREDENTIAL = b"authsome:test-token"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["splice", "asyncio"])
def relay_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "splice":
        if not splice.available():
            pytest.skip("splice(2) is Linux-only")
    else:
        monkeypatch.setattr(relay_module.splice, "available", lambda: False)
    yield request.param


async def _open_tunnel(front_port: int, target_port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", front_port)
    auth = base64.b64encode(CREDENTIAL).decode()
    writer.write(
        f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\nHost: 127.0.0.1:{target_port}\r\n"
        f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), status
    return reader, writer


async def _with_tunnel(handler: Handler, body: Callable[[FrontDoor, int, int], Awaitable[None]]) -> FrontDoor:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    target_port = server.sockets[0].getsockname()[1]
    front = FrontDoor(Router([]), CREDENTIAL)
    front_port = await front.start(("127.0.0.1", 1))  # nothing is handed to mitmproxy in these tests
    try:
        await asyncio.wait_for(body(front, front_port, target_port), 60)
    finally:
        front.close()
        server.close()
    return front


def test_large_streams_both_ways_with_half_close(relay_kind: str) -> None:
    upload = os.urandom(8 << 20)
    download = os.urandom(6 << 20)

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = await reader.read()  # until the client's half-close arrives
        writer.write(hashlib.sha256(received).digest() + download)
        await writer.drain()
        writer.close()

    async def body(front: FrontDoor, front_port: int, target_port: int) -> None:
        reader, writer = await _open_tunnel(front_port, target_port)
        writer.write(upload)
        await writer.drain()
        writer.write_eof()
        answer = await reader.read()
        assert answer[:32] == hashlib.sha256(upload).digest()
        assert answer[32:] == download
        writer.close()

    run_async(_with_tunnel(upstream, body))


def _more_than_the_kernel_buffers() -> int:
    """More bytes than both hops' socket buffers and the relay's pipe can hold at their largest."""
    largest = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        try:
            with open(f"/proc/sys/net/ipv4/{name}") as sysctl:
                largest += int(sysctl.read().split()[-1])
        except (OSError, ValueError, IndexError):
            largest += 8 << 20
    return 2 * largest + (4 << 20)


def test_slow_reader_gets_every_byte(relay_kind: str) -> None:
    payload = os.urandom(_more_than_the_kernel_buffers())
    sent = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        sent.set()
        writer.close()

    async def body(front: FrontDoor, front_port: int, target_port: int) -> None:
        reader, writer = await _open_tunnel(front_port, target_port)
        await asyncio.sleep(0.5)
        assert not sent.is_set()  # nobody read yet: the sender is held back, not buffered without bound
        assert len(front._relays) == (1 if relay_kind == "splice" else 0)
        received = bytearray()
        while chunk := await reader.read(256 << 10):
            received += chunk
            await asyncio.sleep(0.001)
        assert bytes(received) == payload
        writer.close()

    run_async(_with_tunnel(upstream, body))


def test_upstream_reset_ends_the_client_side(relay_kind: str) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    async def body(front: FrontDoor, front_port: int, target_port: int) -> None:
        reader, writer = await _open_tunnel(front_port, target_port)
        writer.write(b"hello")
        try:
            leftover = await reader.read()
        except ConnectionResetError:
            leftover = b""
        assert leftover == b""
        writer.close()
        for _ in range(100):
            if not front._relays:
                break
            await asyncio.sleep(0.01)
        assert not front._relays  # the relay let go of both sockets

    run_async(_with_tunnel(upstream, body))


def test_closing_the_front_door_ends_live_tunnels(relay_kind: str) -> None:
    arrived = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        arrived.set()
        await reader.read()
        writer.close()

    async def body(front: FrontDoor, front_port: int, target_port: int) -> None:
        reader, writer = await _open_tunnel(front_port, target_port)
        writer.write(b"ping")
        await writer.drain()
        await asyncio.wait_for(arrived.wait(), 5)  # the tunnel is live: the relay has passed the bytes on
        front.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # an orderly end (EOF), neither a hang nor a reset
        writer.close()

    run_async(_with_tunnel(upstream, body))


def test_no_pipe_for_the_relay_closes_that_tunnel_only(monkeypatch: pytest.MonkeyPatch) -> None:
    if not splice.available():
        pytest.skip("splice(2) is Linux-only")

    def out_of_descriptors() -> tuple[int, int, int]:
        raise OSError(24, "Too many open files")

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(5))
        await writer.drain()
        writer.close()

    async def body(front: FrontDoor, front_port: int, target_port: int) -> None:
        crashed: list[BaseException] = []
        original_serve = front._serve

        async def serve(client: Any) -> None:  # every connection's task, watched for an unhandled error
            try:
                await original_serve(client)
            except Exception as exc:
                crashed.append(exc)
                raise

        front._serve = serve  # type: ignore[method-assign]
        with monkeypatch.context() as patch:
            patch.setattr(splice, "_pipe", out_of_descriptors)
            reader, writer = await _open_tunnel(front_port, target_port)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # this tunnel is closed, cleanly
            writer.close()
        reader, writer = await _open_tunnel(front_port, target_port)  # the front door still serves
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(), 5) == b"hello"
        writer.close()
        for _ in range(100):
            if not front._relays:
                break
            await asyncio.sleep(0.01)
        assert not front._relays  # and lets go of it once both ends are done
        assert crashed == [], crashed  # the failure was handled, not left to crash the connection's task

    run_async(_with_tunnel(upstream, body))
