"""mitmproxy, in-process, on 127.0.0.1:<ephemeral port>, in a background thread with its own event loop.

The child talks to the :class:`~authsome.proxy.relay.FrontDoor` on the same loop, which relays tunnels to unrouted
hosts itself and hands everything else to mitmproxy. The front door serves from the loop's first moment; mitmproxy is
imported on a worker thread meanwhile (about a quarter of a second), and what is for it waits until it is ready.

Only the addons the run needs are loaded (proxy server, protocol detection, TLS, and authsome's own), not mitmproxy's
full default set: :func:`load_mitmproxy` imports ``mitmproxy.addons.<name>`` modules without executing the package's
``__init__`` (which imports every addon, a web framework and an LDAP client included), which roughly halves start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import socket
import sys
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authsome.errors import AuthsomeError
from authsome.proxy import tls
from authsome.proxy.relay import FrontDoor
from authsome.proxy.resolve import CachingResolver
from authsome.proxy.tls import tls_addon
from authsome.proxy.upstream import Connector, UpstreamHandshakes, proxy_address

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_ADDONS_PACKAGE = "mitmproxy.addons"
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


class _LazyPackage(types.ModuleType):
    """``mitmproxy.addons`` with submodules importable on their own; the package body runs on first attribute use."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        submodule = f"{self.__name__}.{name}"
        if importlib.util.find_spec(submodule) is not None:  # `from mitmproxy.addons import x` lands here
            return importlib.import_module(submodule)
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # run the real __init__ only once
        spec.loader.exec_module(self)
        return getattr(self, name)


class _Deferred(types.ModuleType):
    """A module whose body runs when a name it does not define yet is first read (``import x`` alone does not).

    (:class:`importlib.util.LazyLoader` would not do: the ``import`` statement reads ``__spec__``, which runs the body.)
    """

    def __getattr__(self, name: str) -> Any:
        if name in _IMPORT_PROBES:  # the import system asks, e.g. `__path__` to tell a package from a module
            raise AttributeError(name)
        return getattr(_run_body(self), name)


_IMPORT_PROBES = frozenset({"__path__", "__file__", "__cached__", "__loader__", "__package__", "__spec__"})


def _run_body(module: types.ModuleType) -> types.ModuleType:
    if isinstance(module, _Deferred):
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        module.__class__ = types.ModuleType  # type: ignore[assignment]  # from now on, an ordinary module
        spec.loader.exec_module(module)
    return module


# Imported when mitmproxy starts, used only by what a run never does: QUIC's certificate checks (service_identity, with
# attrs and pyasn1), reading or writing a YAML options file (ruamel.yaml), parsing typed commands (pyparsing).
DEFERRED_MODULES = ("service_identity", "ruamel.yaml", "pyparsing", "mitmproxy.command_lexer")


def defer_unused_imports() -> None:
    """Run the bodies of :data:`DEFERRED_MODULES` (a fifth of mitmproxy's import time) on first use (idempotent).

    ``mitmproxy.command`` takes ``unquote`` from its lexer module, whose body builds a pyparsing grammar: that
    module's stand-in gets an ``unquote`` that runs the real body first (nothing else reads it until a command is
    parsed).
    """
    for name in DEFERRED_MODULES:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:  # pragma: no cover - mitmproxy's dependencies
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _Deferred
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    lexer = sys.modules.get("mitmproxy.command_lexer")
    if isinstance(lexer, _Deferred) and "unquote" not in vars(lexer):

        def unquote(text: str) -> str:
            real: Any = _run_body(lexer)
            return str(real.unquote(text))

        lexer.unquote = unquote  # type: ignore[attr-defined]


def load_mitmproxy() -> None:
    """Make ``mitmproxy.addons`` importable without its eager ``__init__`` (idempotent)."""
    defer_unused_imports()
    _skip_message_type_checks()
    _keep_upstream_proxy_errors()
    tls.load_ca_key_without_rsa_recheck()
    if _ADDONS_PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(_ADDONS_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:  # pragma: no cover - mitmproxy is a dependency
        raise AuthsomeError("mitmproxy is not installed", "install authsome with its dependencies")
    package = _LazyPackage(_ADDONS_PACKAGE)
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__package__ = _ADDONS_PACKAGE
    sys.modules[_ADDONS_PACKAGE] = package


def _skip_message_type_checks() -> None:
    """Skip the field type checks mitmproxy runs on every HTTP message it builds unless Python runs with ``-O``.

    ``MessageData.__post_init__`` exists only under ``__debug__``; it formats an error message for every field of
    every request and response (about a tenth of the proxy's time per request). authsome's messages come from
    mitmproxy's own parsers, so the run behaves as ``python -O`` would.
    """
    from mitmproxy import http

    if "__post_init__" in vars(http.MessageData):
        http.MessageData.__post_init__ = _no_check  # type: ignore[method-assign]


def _keep_upstream_proxy_errors() -> None:
    """Keep why a chained proxy refused a tunnel (``407 …``) on the server connection it was for.

    mitmproxy (11.x and 12.x) only logs it: ``HttpUpstreamProxy`` closes the tunnel and leaves the server connection
    without an error, so the request inside the tunnel could not say what went wrong.
    """
    from mitmproxy.proxy.layers.http import _upstream_proxy

    cls: Any = _upstream_proxy.HttpUpstreamProxy
    if getattr(cls, "_authsome_keeps_errors", False):
        return
    original = cls.on_handshake_error

    def on_handshake_error(self: Any, err: str) -> Any:
        if not self.conn.error:
            self.conn.error = err
        return (yield from original(self, err))

    cls.on_handshake_error = on_handshake_error
    cls._authsome_keeps_errors = True


def _no_check(self: object) -> None:
    """What ``MessageData.__post_init__`` does under ``python -O``: nothing."""


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
    """Keeps mitmproxy's error lines (to explain a failed start) and prints warnings with ``--verbose``."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(logging.WARNING if verbose else logging.ERROR)
        self.verbose = verbose
        self.errors: list[str] = []
        self.collecting = True  # only during start-up

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.levelno >= logging.ERROR and self.collecting:
            self.errors.append(message)
        if self.verbose:
            sys.stderr.write(f"authsome: mitmproxy: {message}\n")


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
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.front.close)
        if self._thread is not None and (wait or self.ready.is_set()):
            self._thread.join(STOP_TIMEOUT)
        logging.getLogger("mitmproxy").removeHandler(self._log)

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
            await loop.run_in_executor(None, _import_mitmproxy)  # the loop relays meanwhile
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

        from authsome.proxy.dispatch import HookDispatch

        tls_config = tls_addon(tlsconfig.TlsConfig)
        mitm_addons: Any = (proxyserver.Proxyserver, next_layer.NextLayer, tls_config, disable_h2c.DisableH2C)

        opts: Any = options.Options()
        master: Any = Master(opts, event_loop=asyncio.get_running_loop())
        HookDispatch.install(master)
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
        # mitmproxy's per-connection entry point (11.x and 12.x); without it the front door relays over loopback
        accept = next((getattr(s, "handle_stream", None) for s in servers.servers), None)
        return (int(addrs[0][1]) if addrs else 0), accept, run


def _import_mitmproxy() -> None:
    """What a proxy start imports (a quarter of a second): on a worker thread, while the event loop serves."""
    load_mitmproxy()
    for name in ("master", "addons.proxyserver", "addons.next_layer", "addons.tlsconfig", "addons.disable_h2c"):
        importlib.import_module(f"mitmproxy.{name}")
    for name in ("http", "tls", "connection", "proxy.layers", "proxy.mode_specs"):  # what authsome's addons use
        importlib.import_module(f"mitmproxy.{name}")
