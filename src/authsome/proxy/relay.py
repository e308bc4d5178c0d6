"""The front door: the port the child talks to, a small CONNECT relay in front of mitmproxy. No mitmproxy here.

It reads the first request head of each client connection and decides:

* ``CONNECT``: ask the :class:`~authsome.proxy.auth.Authenticator` who is asking (``407``/``429`` and nothing more
  for a refusal). To a host none of that principal's routes could match: open the
  tunnel (directly, or through the chained upstream proxy) and relay bytes both ways at socket speed. mitmproxy never
  sees these connections; the client sees the real server and its certificate. When the tunnel cannot be opened the
  CONNECT gets ``502`` whose reason phrase and JSON body say why, and the failure is reported like a refused request.
* anything else (``CONNECT`` to a routed host, plain HTTP, ``mitm.it``): hand the connection, bytes unchanged, to
  mitmproxy on its own loopback port, which authenticates, intercepts and injects.
* with ``health`` set (the gateway), an origin-form ``GET /healthz`` or ``/readyz`` without credentials: answered
  here with ``ok``/``ready`` (or ``503 not ready``) and nothing else; a proxy request is never origin-form.
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

from authsome.providers.hosts import split_host_port
from authsome.proxy import splice, upstream
from authsome.proxy.auth import LOCAL_REFUSAL, REALM, Authenticator, Denied, Principal, RunCredential, reason_phrase
from authsome.proxy.cork import CorkedTransport
from authsome.proxy.report import ERROR_HEADER, Reporter, RequestRecord, error_body
from authsome.proxy.routing import Router
from authsome.proxy.upstream import UpstreamError, describe, verdict

Address = tuple[str, int]
Accept = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0


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
    try:
        return split_host_port(target, None)
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


def _peer(pipe: _Pipe) -> str | None:
    """The client's address (no port), for per-address limits."""
    peer = pipe.transport.get_extra_info("peername") if pipe.transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


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


def _response(status: int, reason: str, body: str | bytes = "", extra: str = "", kind: str = "text/plain") -> bytes:
    payload = body.encode() if isinstance(body, str) else body
    reason = "".join(c if " " <= c <= "~" else "?" for c in reason)  # one line of visible ASCII, whatever the cause
    return (
        f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: {kind}\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload


class FrontDoor:
    """Listens (on 127.0.0.1:<ephemeral> unless told); relays unrouted tunnels itself, hands the rest to mitmproxy.

    ``credential`` is the :class:`~authsome.proxy.auth.Authenticator` (or, for one principal routed by ``router``,
    the per-run ``b"user:token"``). ``health``, when given, answers ``GET /readyz`` (True: ready).
    """

    def __init__(
        self,
        router: Router,
        credential: bytes | Authenticator,
        *,
        upstream: UpstreamProxy | None = None,
        log: Callable[[str], None] | None = None,
        reporter: Reporter | None = None,
        health: Callable[[], bool] | None = None,
    ) -> None:
        self.router = router
        if isinstance(credential, bytes):  # the per-run credential, b"user:token", for this router
            credential = RunCredential.from_pair(credential, Principal(None, router))
        self.auth = credential
        self.health = health
        self.upstream = upstream
        self.log = log or (reporter.info if reporter is not None else None)
        self.reporter = reporter
        self.backend: Address | None = None
        self.accept: Accept | None = None
        self._server: asyncio.AbstractServer | None = None
        self._backend: asyncio.Future[None] | None = None  # done once mitmproxy is attached (or failed to start)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pipes: weakref.WeakSet[_Pipe] = weakref.WeakSet()
        self._relays: set[splice.SpliceRelay] = set()

    async def start(
        self,
        backend: Address | None = None,
        accept: Accept | None = None,
        listen: Address = ("127.0.0.1", 0),
        sock: socket.socket | None = None,
    ) -> int:
        """Start listening on ``listen`` (or on ``sock``, bound and listening already); returns the front door's port.

        ``backend`` is mitmproxy's own listening address. ``accept``, when given, is mitmproxy's connection handler
        (what its own server calls for each client): connections are then handed over in-process, without a second
        loopback hop. Without ``backend`` the front door serves at once, relaying unrouted tunnels, and what is for
        mitmproxy waits until :meth:`attach` (a run starts its child while mitmproxy is still being imported). With
        ``sock``, clients that connected before this call were held by the kernel and are served now.
        """
        loop = asyncio.get_running_loop()
        self._backend = loop.create_future()
        if backend is not None:
            self.attach(backend, accept)
        if sock is not None:
            self._server = await loop.create_server(self._accept, sock=sock)
        else:
            self._server = await loop.create_server(self._accept, *listen)
        return int(self._server.sockets[0].getsockname()[1])

    def attach(self, backend: Address, accept: Accept | None = None) -> None:
        """mitmproxy is ready at ``backend`` (``accept``: its in-process handler); connections waiting for it go on."""
        self.backend = backend
        self.accept = accept
        if self._backend is not None and not self._backend.done():
            self._backend.set_result(None)

    def detach(self) -> None:
        """mitmproxy will not come: connections waiting for it, and later ones, get ``502``."""
        if self._backend is not None and not self._backend.done():
            self._backend.set_exception(ConnectionError("the proxy did not start"))
            self._backend.exception()  # retrieved: nobody may be waiting

    def stop_listening(self) -> None:
        """Accept no new connection; those already open carry on (a graceful shutdown)."""
        if self._server is not None:
            self._server.close()

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
        uri = rest.split(" ", 1)[0]
        probe = method == "GET" and uri.startswith("/") and "proxy-authorization" not in head.headers
        if self.health is not None and probe:  # origin-form: never a proxy request
            self._answer_health(client, uri)
            return
        target = parse_target(uri) if method == "CONNECT" else None
        if method == "CONNECT" and target is None:
            self._refuse(client, 400, "Bad Request", "authsome: a CONNECT target is host:port\n")
            return
        try:
            if target is not None:
                who = self.auth.authenticate(head.headers.get("proxy-authorization", ""), _peer(client))
                if isinstance(who, Denied):
                    self._deny(client, who)
                    return
                if not who.may_reach(target[0]):  # an agent asking for the gateway host's own services
                    self._deny(client, Denied(403, LOCAL_REFUSAL, "destination_forbidden"))
                    reason = f"destination_forbidden: {LOCAL_REFUSAL}"
                    self._report(RequestRecord("refused", "CONNECT", *target, "", reason=reason, status=403), who.name)
                    return
                if not who.router.intercepts(*target):  # that principal's routes: an agent's own
                    await self._tunnel(client, target, who)
                    return
            await self._hand_off(client, raw)
        except asyncio.CancelledError:
            client.close()
            raise

    async def _hand_off(self, client: _Pipe, raw: bytes) -> None:
        assert self._backend is not None
        try:
            await asyncio.shield(self._backend)
        except ConnectionError:
            self._refuse(client, 502, "Bad Gateway", "authsome: the proxy did not start\n")
            return
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
        writer = asyncio.StreamWriter(CorkedTransport(transport, loop), protocol, reader, loop)
        transport.resume_reading()
        await accept(reader, writer)

    def _deny(self, client: _Pipe, denied: Denied) -> None:
        extra = f'Proxy-Authenticate: Basic realm="{REALM}"\r\n' if denied.status == 407 else ""
        if denied.retry_after is not None:
            extra += f"Retry-After: {denied.retry_after}\r\n"
        self._refuse(client, denied.status, reason_phrase(denied), f"authsome: {denied.reason}\n", extra)

    def _answer_health(self, client: _Pipe, path: str) -> None:
        """``/healthz``: the gateway answers; ``/readyz``: it is ready for agents. Nothing else, ever."""
        assert self.health is not None
        path = path.split("?", 1)[0]
        if path == "/healthz":
            self._refuse(client, 200, "OK", "ok\n")
        elif path == "/readyz" and self.health():
            self._refuse(client, 200, "OK", "ready\n")
        elif path == "/readyz":
            self._refuse(client, 503, "Service Unavailable", "not ready\n")
        else:
            self._refuse(client, 404, "Not Found", "authsome: this is a proxy; set it as HTTPS_PROXY\n")

    async def _tunnel(self, client: _Pipe, target: Address, principal: Principal) -> None:
        where = f"{target[0]}:{target[1]}" if ":" not in target[0] else f"[{target[0]}]:{target[1]}"
        try:
            server = await (self._via_upstream(where) if self.upstream else self._connect(target))
        except (TimeoutError, OSError) as exc:
            self._unreachable(client, target, where, describe(exc, upstream.CONNECT_TIMEOUT), principal.name)
            return
        assert client.transport is not None
        client.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        record = RequestRecord("tunnel", "CONNECT", target[0], target[1], "", reason="no route: relayed untouched")
        if self.reporter is not None and principal.name is not None:  # the gateway: every agent's tunnel is audited
            record.agent = principal.name
            self.reporter.decided(record)
            self.reporter.finished(record)
        elif self.log:
            self.log(record.line())
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
            upstream.CONNECT_TIMEOUT,
        )
        self._pipes.add(pipe)
        return pipe

    async def _via_upstream(self, where: str) -> _Pipe:
        proxy = self.upstream
        assert proxy is not None
        name = f"the upstream proxy {proxy.address[0]}:{proxy.address[1]}"
        try:
            pipe = await self._connect(proxy.address, proxy.tls)
        except UpstreamError:  # already worded, the proxy named (the run's connector knows it)
            raise
        except (TimeoutError, OSError) as exc:
            raise UpstreamError(f"{name}: {describe(exc, upstream.CONNECT_TIMEOUT)}") from None
        auth = ""
        if proxy.auth:
            auth = f"Proxy-Authorization: Basic {base64.b64encode(proxy.auth.encode()).decode()}\r\n"
        assert pipe.transport is not None
        pipe.transport.write(f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n{auth}\r\n".encode())
        try:
            reply = Head.parse(await asyncio.wait_for(pipe.head(), upstream.CONNECT_TIMEOUT))
        except (TimeoutError, OSError, ValueError) as exc:
            pipe.close()
            raise UpstreamError(f"{name}: {describe(exc, upstream.CONNECT_TIMEOUT)}") from None
        except BaseException:
            pipe.close()
            raise
        status = reply.first_line.split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            pipe.close()
            raise UpstreamError(f"{name} answered {' '.join(status[1:]) or 'nothing'}")
        return pipe

    def _unreachable(self, client: _Pipe, target: Address, where: str, cause: str, agent: str | None = None) -> None:
        """502 to the CONNECT, saying why, plus the ``--verbose`` line and the audit record of a refused request."""
        code, fix = verdict(cause)
        reason = f"cannot reach {where} ({cause})"
        body = error_body(code, f"{reason}. Fix: {fix}", provider=None, connection=None, reason=reason, fix=fix)
        self._refuse(client, 502, f"authsome: {reason}", body, f"{ERROR_HEADER}: {code}\r\n", "application/json")
        self._report(
            RequestRecord("refused", "CONNECT", target[0], target[1], "", reason=f"{code}: {reason}", status=502), agent
        )

    def _report(self, record: RequestRecord, agent: str | None) -> None:
        """A CONNECT the front door answered itself: its ``--verbose`` line and its audit record."""
        record.agent = agent
        if self.reporter is not None:
            self.reporter.decided(record)
            self.reporter.finished(record)
        elif self.log is not None:
            self.log(record.line())

    @staticmethod
    def _refuse(
        client: _Pipe, status: int, reason: str, body: str | bytes, extra: str = "", kind: str = "text/plain"
    ) -> None:
        if client.transport is not None and not client.lost:
            client.transport.write(_response(status, reason, body, extra, kind))
            with contextlib.suppress(Exception):
                client.transport.close()
