"""mitmproxy, in-process, on 127.0.0.1:<ephemeral port>, in a background thread with its own event loop.

The child talks to the :class:`~authsome.proxy.relay.FrontDoor` on the same loop, which relays tunnels to unrouted
hosts itself and hands everything else to mitmproxy. The front door serves from the loop's first moment; mitmproxy is
imported on a worker thread meanwhile (about a quarter of a second), and what is for it waits until it is ready.

Only the addons the run needs are loaded (proxy server, protocol detection, TLS, and authsome's own), not mitmproxy's
full default set, and without the package ``__init__`` that would import them all (see
:mod:`authsome.proxy.mitm_internals`, which holds everything here that goes beyond mitmproxy's addon API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authsome.errors import AuthsomeError
from authsome.proxy import mitm_internals
from authsome.proxy.relay import FrontDoor
from authsome.proxy.resolve import CachingResolver
from authsome.proxy.tls import tls_addon
from authsome.proxy.upstream import Connector, UpstreamHandshakes, proxy_address

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
Address = tuple[str, int]


@dataclass(frozen=True)
class ServerOptions:
    """How to run mitmproxy; every path is prepared by the runner."""

    confdir: Path
    upstream_trust: Path  # PEM bundle used to verify upstream servers
    upstream_proxy: str | None = None  # "http://host:port" to chain through
    verbose: bool = False
    resolve: Mapping[Address, Address] = field(default_factory=dict)  # test stand-ins: (host, port) -> socket address
    listen: Address = ("127.0.0.1", 0)  # the front door's address (mitmproxy's own port is always loopback)
    listener: socket.socket | None = None  # the front door's socket, bound (and its port given out) before the start


def mitmproxy_version() -> tuple[int, ...]:
    from mitmproxy import version

    return tuple(int(p) for p in version.VERSION.split(".")[:3] if p.isdigit())


def http2_is_safe() -> bool:
    """HTTP/2 from clients only where the h2→h1 smuggling fix (GHSA-847f-9342-265h, mitmproxy 12.1.2) is present."""
    return mitmproxy_version() >= (12, 1, 2)


class _Ready:
    """Tells ``_main`` that mitmproxy is listening (the ``running`` hook comes after the servers start)."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def running(self) -> None:
        self.event.set()


class _ServerTlsFirst:
    """mitmproxy addon, after ``TlsConfig``: finish the upstream TLS handshake before the child's.

    The run uses mitmproxy's ``lazy`` connection strategy, so a CONNECT is answered without touching the upstream
    (``eager`` answers an unreachable one with mitmproxy's own text). The upstream is then reached when the child's
    ClientHello arrives, before the child's handshake, exactly as ``eager`` does; when that fails the child's
    handshake still completes, and each request in the tunnel gets authsome's JSON error naming the cause.
    """

    def tls_clienthello(self, data: Any) -> None:
        data.establish_server_tls_first = bool(data.context.server.tls)


class _Collect(logging.Handler):
    """Keeps mitmproxy's error lines (to explain a failed start) and prints warnings with ``--verbose``.

    Once started, an error (an addon that raised: a bug) is not kept silent without ``--verbose`` either: one line per
    kind of exception names its type only, since the message could quote a request."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(logging.WARNING if verbose else logging.ERROR)
        self.verbose = verbose
        self.errors: list[str] = []
        self.collecting = True  # only during start-up
        self._told: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.levelno >= logging.ERROR and self.collecting:
            self.errors.append(message)
        if self.verbose:
            sys.stderr.write(f"authsome: mitmproxy: {message}\n")
        elif record.levelno >= logging.ERROR and not self.collecting:
            kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "an error"
            if kind not in self._told:
                self._told.add(kind)
                sys.stderr.write(
                    f"authsome: internal error in the proxy ({kind}); requests go on. Please report it, with the "
                    "lines `--verbose` prints\n"
                )


class ProxyServer:
    """One mitmproxy instance with authsome's addons; ``start()`` returns the port, ``stop()`` is idempotent."""

    def __init__(
        self,
        options: ServerOptions,
        addons: Sequence[object] | Callable[[], Sequence[object]],
        front: FrontDoor,
    ) -> None:
        self.options = options
        self._addons = addons  # a callable is called on the server's thread, once mitmproxy is imported there
        self.front = front
        self.ready = threading.Event()  # set once listening, or once starting failed (see wait_ready)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._log = _Collect(options.verbose)
        self._stopping = False
        self._connector = Connector(proxy_address(options.upstream_proxy))

    def start(self) -> int:
        """Start listening; raises :class:`AuthsomeError` with mitmproxy's reason when it cannot."""
        self.start_in_background()
        return self.wait_ready()

    def start_in_background(self) -> None:
        """Import and start mitmproxy on the server's thread; :meth:`wait_ready` says how that went."""
        logger = logging.getLogger("mitmproxy")
        logger.addHandler(self._log)
        self._thread = threading.Thread(target=self._serve, args=(self.ready,), name="authsome-proxy", daemon=True)
        self._thread.start()

    def wait_ready(self) -> int:
        """The port once listening; :class:`AuthsomeError` with mitmproxy's reason when it could not start."""
        self.ready.wait(START_TIMEOUT)
        if not self.port or self._log.errors:  # an addon that failed to configure (e.g. the CA directory) is fatal
            self.stop()
            errors = dict.fromkeys(e.removeprefix("Addon error: ") for e in self._log.errors)
            reason = "; ".join(errors) or (repr(self._error) if self._error else "timed out")
            raise AuthsomeError(f"the proxy did not start: {reason}", "run again with --verbose to see why")
        self._log.collecting = False
        return self.port

    def stop_accepting(self) -> None:
        """Take no new client connection; those open carry on until :meth:`stop` (a graceful shutdown)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.front.stop_listening)

    def stop(self, *, wait: bool = True) -> None:
        """Shut mitmproxy down and wait for its thread (``wait=False``: a process about to exit need not wait for a
        start still under way; the thread sees the stop once started, and is a daemon)."""
        self._stopping = True
        loop, master = self._loop, self._master
        if loop is not None and master is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                master.shutdown()
        elif loop is not None and not loop.is_closed():  # still importing mitmproxy
            try:
                loop.call_soon_threadsafe(self._close_front)
            except RuntimeError:  # the loop closed meanwhile
                self._close_listener()
        else:
            self._close_listener()  # no loop (yet, or any more) serves it
        if self._thread is not None and (wait or self.ready.is_set()):
            self._thread.join(STOP_TIMEOUT)
        logging.getLogger("mitmproxy").removeHandler(self._log)

    def _close_front(self) -> None:
        """On the loop: the front door, then its listening socket. Never closed from another thread while the loop may
        still be using it (its file descriptor would be gone when the loop stops serving it)."""
        self.front.close()
        self._close_listener()

    def _close_listener(self) -> None:
        if self.options.listener is not None:
            self.options.listener.close()

    def _serve(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.get_running_loop()
        CachingResolver(loop, self.options.resolve).install(loop)  # the front door's tunnels use both
        self._connector.install(loop)
        front_port = 0
        # The front door serves at once: unrouted tunnels need no mitmproxy; the rest waits for it.
        try:
            front_port = await self.front.start(listen=self.options.listen, sock=self.options.listener)
        except OSError as exc:
            self._log.errors.append(f"cannot listen on {self.options.listen[0]}: {exc.strerror or exc}")
            return
        try:
            await loop.run_in_executor(None, mitm_internals.import_mitmproxy)  # the loop relays meanwhile
            port, accept, run = await self._start_mitmproxy()
            if port:
                self.front.attach(("127.0.0.1", port), accept)
        finally:
            if self.front.backend is None:
                self.front.detach()
        self.port = front_port if port else 0
        if not self.port or self._stopping:  # failed, or stopped while starting (the run's child is gone already)
            self._master.should_exit.set()
        ready.set()
        try:
            await run
        finally:
            self.front.close()

    async def _start_mitmproxy(self) -> tuple[int, Any, asyncio.Future[None]]:
        """mitmproxy's port (0 when it could not listen), its in-process connection handler and its running task."""
        from mitmproxy import options
        from mitmproxy.addons import disable_h2c, next_layer, proxyserver, tlsconfig
        from mitmproxy.master import Master

        tls_config = tls_addon(tlsconfig.TlsConfig)
        mitm_addons: Any = (proxyserver.Proxyserver, next_layer.NextLayer, tls_config, disable_h2c.DisableH2C)

        opts: Any = options.Options()
        master: Any = Master(opts, event_loop=asyncio.get_running_loop())
        mitm_internals.install_hook_dispatch(master)
        self._master = master
        listening = asyncio.Event()
        started = _Ready(listening)
        # Order matters: authsome's addons decide before mitmproxy's defaults (next_layer, TLS) see an event; the
        # upstream handshakes addon words a failed handshake before the addons that report it read the error.
        addons = self._addons() if callable(self._addons) else self._addons
        master.addons.add(UpstreamHandshakes(self._connector), *addons)
        master.addons.add(*(cls() for cls in mitm_addons), _ServerTlsFirst(), started)
        o = self.options
        opts.update(
            mode=[f"upstream:{o.upstream_proxy}" if o.upstream_proxy else "regular"],
            listen_host="127.0.0.1",
            listen_port=0,
            confdir=str(o.confdir),
            ssl_verify_upstream_trusted_ca=str(o.upstream_trust),
            http2=http2_is_safe(),
            validate_inbound_headers=True,
            connection_strategy="lazy",  # see _ServerTlsFirst
        )
        run = asyncio.ensure_future(master.run())
        waiter = asyncio.ensure_future(listening.wait())
        await asyncio.wait([run, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not listening.is_set():
            return 0, None, run
        master.addons.remove(started)  # every addon is asked about every event: keep the chain short
        servers = master.addons.get("proxyserver")
        addrs = servers.listen_addrs()
        accept = mitm_internals.connection_handler(servers)
        return (int(addrs[0][1]) if addrs else 0), accept, run
