"""The corked transport: what is written in one turn of the loop goes out together, in order, and nothing is lost
or held back by a close, a half-close or a flow-control check."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from authsome.proxy.cork import FLUSH_AT, CorkedTransport

from .conftest import run_async

Body = Callable[[CorkedTransport, list[bytes], socket.socket], Awaitable[None]]


def _with_corked(body: Body) -> None:
    """Run ``body(corked, sends, peer)``: ``corked`` wraps a real socket transport whose peer is ``peer``; ``sends``
    lists what reached the wrapped transport's ``write``, one entry per call."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, peer = socket.socketpair()
        peer.settimeout(5)
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        assert isinstance(transport, asyncio.Transport)
        sends: list[bytes] = []
        real_write = transport.write

        def write(data: bytes | bytearray | memoryview) -> None:
            sends.append(bytes(data))
            real_write(data)

        transport.write = write  # type: ignore[method-assign]
        try:
            await body(CorkedTransport(transport, loop), sends, peer)
        finally:
            transport.abort()
            peer.close()

    run_async(main())


def _read_all(peer: socket.socket) -> bytes:
    data = b""
    while chunk := peer.recv(65536):
        data += chunk
    return data


def test_pieces_written_in_one_turn_go_out_in_one_write_in_order() -> None:
    async def body(corked: CorkedTransport, sends: list[bytes], peer: socket.socket) -> None:
        corked.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        corked.write(b"hello")
        assert sends == []  # nothing sent while the turn goes on
        assert corked.get_write_buffer_size() == 43  # a flow-control check sees what is pending
        await asyncio.sleep(0)
        assert sends == [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"]
        corked.write(b"next")
        await asyncio.sleep(0)
        assert sends[1:] == [b"next"]
        assert peer.recv(100) == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhellonext"

    _with_corked(body)


def test_a_large_write_is_not_held() -> None:
    async def body(corked: CorkedTransport, sends: list[bytes], peer: socket.socket) -> None:
        corked.write(b"head")
        corked.write(b"x" * FLUSH_AT)
        assert sends == [b"head" + b"x" * FLUSH_AT]  # at once, not at the end of the turn

    _with_corked(body)


def test_close_and_half_close_send_what_is_pending_first() -> None:
    async def close(corked: CorkedTransport, sends: list[bytes], peer: socket.socket) -> None:
        corked.write(b"last ")
        corked.write(b"words")
        corked.close()
        await asyncio.sleep(0.01)
        assert _read_all(peer) == b"last words"  # then the end of the stream

    async def half_close(corked: CorkedTransport, sends: list[bytes], peer: socket.socket) -> None:
        assert corked.can_write_eof()
        corked.write(b"request body")
        corked.write_eof()
        await asyncio.sleep(0.01)
        assert _read_all(peer) == b"request body"
        assert not corked.is_closing()  # only our side of the stream ended

    _with_corked(close)
    _with_corked(half_close)


def test_abort_drops_what_is_pending() -> None:
    async def body(corked: CorkedTransport, sends: list[bytes], peer: socket.socket) -> None:
        corked.write(b"never sent")
        corked.abort()
        await asyncio.sleep(0.01)
        assert sends == []
        assert _read_all(peer) == b""

    _with_corked(body)


def test_the_rest_is_the_wrapped_transports_own() -> None:
    async def body(corked: CorkedTransport, sends: list[bytes], peer: socket.socket) -> None:
        assert corked.get_extra_info("socket") is not None
        assert corked.get_extra_info("no such thing", "default") == "default"
        corked.set_write_buffer_limits(high=1000, low=10)
        assert corked.get_write_buffer_limits() == (10, 1000)
        corked.pause_reading()
        assert not corked.is_reading()
        corked.resume_reading()
        assert corked.is_reading()
        corked.close()
        assert corked.is_closing()
        corked.write(b"after close")  # dropped, as the wrapped transport would drop it
        await asyncio.sleep(0)
        assert sends == []

    _with_corked(body)
