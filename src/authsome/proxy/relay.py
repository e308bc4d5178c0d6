"""The front door: the port the child talks to, a small CONNECT relay in front of mitmproxy. No mitmproxy here.

It reads the first request head of each client connection and decides:

* ``CONNECT`` to a host no route could match: check the per-run proxy credential (``407`` without it), open the
  tunnel (directly, or through the chained upstream proxy) and relay bytes both ways at socket speed. mitmproxy never
  sees these connections; the client sees the real server and its certificate.
* anything else (``CONNECT`` to a routed host, plain HTTP, ``mitm.it``): hand the connection, bytes unchanged, to
  mitmproxy on its own loopback port, which authenticates, intercepts and injects.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import os
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from authsome.providers.hosts import canonical_host
from authsome.proxy import splice
from authsome.proxy.routing import Router

Address = tuple[str, int]
Accept = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0


def basic_auth_ok(header: str, expected: bytes) -> bool:
    """Whether ``header`` is ``Basic <base64(expected)>`` (constant-time comparison)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


def parse_target(target: str) -> Address | None:
    """A CONNECT target ``host:port`` (IPv6 in brackets) as (canonical host, port), or None."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    try:
        return canonical_host(host), int(port)
    except ValueError:
        return None


@dataclass(frozen=True)
class Head:
    """The first line and headers of an HTTP/1 message."""

    first_line: str
    headers: dict[str, str]

    @classmethod
    def parse(cls, raw: bytes) -> Head:
        lines = raw.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return cls(lines[0], headers)


@dataclass(frozen=True)
class UpstreamProxy:
    """A proxy to chain tunnels through: ``scheme`` http/https, its address, optional ``user:password``."""

    scheme: str
    address: Address
    auth: str | None = None
    tls: ssl.SSLContext | None = None


class _Pipe(asyncio.Protocol):
    """One end of a relay. Until it is paired it buffers what it receives and can hand out the first HTTP head.

    An outgoing connection (``outgoing=True``) reads nothing until it is paired or asked for a head, so that what the
    server sends first stays in the kernel, where a :mod:`splice <authsome.proxy.splice>` relay can pick it up.
    """

    def __init__(self, outgoing: bool = False) -> None:
        self.outgoing = outgoing
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        self._head: asyncio.Future[bytes] | None = None

    async def head(self) -> bytes:
        """The bytes up to and including the first empty line (the rest stays buffered)."""
        self._head = asyncio.get_running_loop().create_future()
        self._check_head()
        if self.transport is not None and not self._head.done():
            self.transport.resume_reading()
        return await self._head

    def pair(self, peer: _Pipe) -> None:
        self.peer = peer
        if self.lost:
            peer.close()
        if self.buffer and peer.transport is not None:
            peer.transport.write(bytes(self.buffer))
        self.buffer.clear()
        if self.eof:
            peer.send_eof()
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def send_eof(self) -> None:
        if self.transport is None or self.lost:
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # pragma: no cover - TLS transports cannot half-close
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.outgoing:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
            return
        self.buffer += data
        self._check_head()

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is None:
            self._fail_head(ConnectionError("connection closed before a complete request"))
            return True
        self.peer.send_eof()
        if self.peer.eof:
            self.close()
            self.peer.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_head(ConnectionError("connection closed"))
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.resume_reading()

    def _check_head(self) -> None:
        if self._head is None or self._head.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(self.buffer[: end + 4])
            del self.buffer[: end + 4]
            if self.transport is not None:
                self.transport.pause_reading()  # nothing more until the other end is ready
            self._head.set_result(head)
        elif len(self.buffer) > MAX_HEAD:
            self._fail_head(ValueError("request head too large"))

    def _fail_head(self, exc: Exception) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)


def _detachable(pipe: _Pipe) -> bool:
    """Whether the pipe's socket can be taken over as is: plain TCP, open, nothing buffered either way."""
    transport = pipe.transport
    return (
        transport is not None
        and not pipe.lost
        and not pipe.eof
        and not pipe.buffer
        and not transport.is_closing()
        and transport.get_write_buffer_size() == 0
        and transport.get_extra_info("sslcontext") is None
        and transport.get_extra_info("socket") is not None
    )


def _detach(pipe: _Pipe) -> socket.socket:
    """Take the socket away from its asyncio transport: a duplicate descriptor survives the transport's close."""
    transport = pipe.transport
    assert transport is not None
    raw = transport.get_extra_info("socket")
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    sock.setblocking(False)
    pipe.transport = None  # the _Pipe forgets it; closing the transport closes only the original descriptor
    transport.abort()
    return sock


def _response(status: int, reason: str, body: str = "", extra: str = "") -> bytes:
    payload = body.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload


class FrontDoor:
    """Listens on 127.0.0.1:<ephemeral>; relays unrouted tunnels itself and hands everything else to mitmproxy."""

    def __init__(
        self,
        router: Router,
        credential: bytes,
        *,
        upstream: UpstreamProxy | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.router = router
        self.credential = credential
        self.upstream = upstream
        self.log = log
        self.backend: Address | None = None
        self.accept: Accept | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pipes: weakref.WeakSet[_Pipe] = weakref.WeakSet()
        self._relays: set[splice.SpliceRelay] = set()

    async def start(self, backend: Address, accept: Accept | None = None) -> int:
        """Start listening; returns the front door's port.

        ``backend`` is mitmproxy's own listening address. ``accept``, when given, is mitmproxy's connection handler
        (what its own server calls for each client): connections are then handed over in-process, without a second
        loopback hop.
        """
        self.backend = backend
        self.accept = accept
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for pipe in list(self._pipes):
            pipe.close()
        for relay in list(self._relays):
            relay.close()

    def _accept(self) -> _Pipe:
        pipe = _Pipe()
        self._pipes.add(pipe)
        task = asyncio.get_running_loop().create_task(self._serve(pipe))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pipe

    async def _serve(self, client: _Pipe) -> None:
        try:
            raw = await asyncio.wait_for(client.head(), HEAD_TIMEOUT)
        except (TimeoutError, ConnectionError, ValueError):
            client.close()
            return
        head = Head.parse(raw)
        method, _, rest = head.first_line.partition(" ")
        target = parse_target(rest.split(" ", 1)[0]) if method == "CONNECT" else None
        try:
            if target is not None and not self.router.intercepts(*target):
                await self._tunnel(client, head, target)
            else:
                await self._hand_off(client, raw)
        except asyncio.CancelledError:
            client.close()
            raise

    async def _hand_off(self, client: _Pipe, raw: bytes) -> None:
        if self.accept is not None and client.transport is not None and not client.lost:
            await self._hand_over(client, raw, self.accept)
            return
        assert self.backend is not None
        try:
            backend = await self._connect(self.backend)
        except OSError:
            self._refuse(client, 502, "Bad Gateway", "authsome: the proxy is shutting down\n")
            return
        assert backend.transport is not None
        backend.transport.write(raw)
        client.pair(backend)
        backend.pair(client)

    @staticmethod
    async def _hand_over(client: _Pipe, raw: bytes, accept: Accept) -> None:
        """Give the client's own connection to mitmproxy, with the bytes read so far put back in front."""
        transport = client.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        reader.feed_data(raw + bytes(client.buffer))
        client.buffer.clear()
        if client.eof:
            reader.feed_eof()
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        transport.resume_reading()
        await accept(reader, writer)

    async def _tunnel(self, client: _Pipe, head: Head, target: Address) -> None:
        if not basic_auth_ok(head.headers.get("proxy-authorization", ""), self.credential):
            self._refuse(
                client,
                407,
                "Proxy Authentication Required",
                "authsome: this proxy serves only the command started by `authsome run`\n",
                'Proxy-Authenticate: Basic realm="authsome"\r\n',
            )
            return
        where = f"{target[0]}:{target[1]}" if ":" not in target[0] else f"[{target[0]}]:{target[1]}"
        try:
            server = await (self._via_upstream(where) if self.upstream else self._connect(target))
        except (TimeoutError, OSError, ConnectionError) as exc:
            self._refuse(client, 502, "Bad Gateway", f"authsome: cannot connect to {where}: {exc}\n")
            return
        assert client.transport is not None
        client.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if self.log:
            self.log(f"tunnel      {where} (no route: relayed untouched)")
        if not self._splice(client, server):
            client.pair(server)
            server.pair(client)

    def _splice(self, client: _Pipe, server: _Pipe) -> bool:
        """Relay the pair in the kernel (``splice(2)``) when both are plain sockets with nothing buffered."""
        if not splice.available() or not (_detachable(client) and _detachable(server)):
            return False
        loop = asyncio.get_running_loop()
        taken: list[socket.socket] = []
        try:
            taken.append(_detach(client))
            taken.append(_detach(server))
            relay = splice.SpliceRelay(loop, taken[0], taken[1], lambda: self._relays.discard(relay))
        except OSError:  # pragma: no cover - out of descriptors: give up on this tunnel
            for sock in taken:
                sock.close()
            client.close()
            server.close()
            return True
        self._relays.add(relay)
        relay.start()
        return True

    async def _connect(self, address: Address, tls: ssl.SSLContext | None = None) -> _Pipe:
        loop = asyncio.get_running_loop()
        _, pipe = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Pipe(outgoing=True), *address, ssl=tls, server_hostname=address[0] if tls else None
            ),
            CONNECT_TIMEOUT,
        )
        self._pipes.add(pipe)
        return pipe

    async def _via_upstream(self, where: str) -> _Pipe:
        upstream = self.upstream
        assert upstream is not None
        pipe = await self._connect(upstream.address, upstream.tls)
        auth = ""
        if upstream.auth:
            auth = f"Proxy-Authorization: Basic {base64.b64encode(upstream.auth.encode()).decode()}\r\n"
        assert pipe.transport is not None
        pipe.transport.write(f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n{auth}\r\n".encode())
        try:
            reply = Head.parse(await asyncio.wait_for(pipe.head(), CONNECT_TIMEOUT))
        except BaseException:
            pipe.close()
            raise
        status = reply.first_line.split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            pipe.close()
            raise ConnectionError(f"the upstream proxy answered {' '.join(status[1:]) or 'nothing'}")
        return pipe

    @staticmethod
    def _refuse(client: _Pipe, status: int, reason: str, body: str, extra: str = "") -> None:
        if client.transport is not None and not client.lost:
            client.transport.write(_response(status, reason, body, extra))
            with contextlib.suppress(Exception):
                client.transport.close()
