"""The front door before mitmproxy is ready: it serves from its first moment. Tunnels to unrouted hosts work at once,
what is for mitmproxy waits for it (and gets 502 if it never comes), and the intercept decision is the front door's.
"""

from __future__ import annotations

import asyncio
import base64

from authsome.proxy.relay import FrontDoor
from authsome.proxy.routing import Route, Router

from .conftest import make_provider, run_async

CREDENTIAL = b"authsome:test-token"
AUTH = f"Proxy-Authorization: Basic {base64.b64encode(CREDENTIAL).decode()}\r\n"
ROUTED = Router([Route(make_provider("openai", "api.openai.com"))])


async def _connect(port: int, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{AUTH}\r\n".encode())
    await writer.drain()
    return reader, writer


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(4))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a test whose client never sends (its loop ends with this connection open)
        finally:
            writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


def test_unrouted_tunnels_work_before_mitmproxy_is_ready() -> None:
    async def body() -> None:
        echo = await _echo_server()
        front = FrontDoor(ROUTED, CREDENTIAL)
        port = await front.start()  # no backend: mitmproxy is still being imported
        try:
            reader, writer = await _connect(port, f"127.0.0.1:{echo.sockets[0].getsockname()[1]}")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            writer.close()
        finally:
            front.close()
            echo.close()

    run_async(body())


def test_routed_tunnels_wait_for_mitmproxy_and_reach_it_intact() -> None:
    async def body() -> None:
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await received.put(await reader.readuntil(b"\r\n\r\n"))
            writer.close()

        mitm = await asyncio.start_server(backend, "127.0.0.1", 0)
        front = FrontDoor(ROUTED, CREDENTIAL)
        port = await front.start()
        try:
            _, writer = await _connect(port, "api.openai.com:443")
            await asyncio.sleep(0.2)
            assert received.empty()  # held: nobody to hand it to yet
            front.attach(("127.0.0.1", mitm.sockets[0].getsockname()[1]))
            head = await asyncio.wait_for(received.get(), 5)
            assert head.startswith(b"CONNECT api.openai.com:443 HTTP/1.1\r\n") and AUTH.encode() in head
            writer.close()
        finally:
            front.close()
            mitm.close()

    run_async(body())


def test_a_proxy_that_never_starts_gets_502_for_routed_tunnels_only() -> None:
    async def body() -> None:
        echo = await _echo_server()
        front = FrontDoor(ROUTED, CREDENTIAL)
        port = await front.start()
        try:
            waiting, _ = await _connect(port, "api.openai.com:443")
            await asyncio.sleep(0.1)
            front.detach()
            answer = await asyncio.wait_for(waiting.read(), 5)
            assert answer.startswith(b"HTTP/1.1 502 ") and b"the proxy did not start" in answer
            later, _ = await _connect(port, "api.openai.com:443")
            assert (await asyncio.wait_for(later.read(), 5)).startswith(b"HTTP/1.1 502 ")
            reader, writer = await _connect(port, f"127.0.0.1:{echo.sockets[0].getsockname()[1]}")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            front.close()
            echo.close()

    run_async(body())


def test_a_connect_without_host_and_port_is_refused_by_the_front_door() -> None:
    async def body() -> None:
        front = FrontDoor(ROUTED, CREDENTIAL)
        port = await front.start(("127.0.0.1", 1))
        try:
            reader, _ = await _connect(port, "api.openai.com")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 400 ") and b"host:port" in answer
        finally:
            front.close()

    run_async(body())
