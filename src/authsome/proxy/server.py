"""mitmproxy, in-process, on 127.0.0.1:<ephemeral port>, in a background thread with its own event loop.

The child talks to the :class:`~authsome.proxy.relay.FrontDoor` on the same loop, which relays tunnels to unrouted
hosts itself and hands everything else to mitmproxy's own (also loopback, also authenticated) port.

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
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authsome.errors import AuthsomeError
from authsome.proxy.relay import FrontDoor
from authsome.proxy.resolve import CachingResolver
from authsome.proxy.tls import tls_addon

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


def load_mitmproxy() -> None:
    """Make ``mitmproxy.addons`` importable without its eager ``__init__`` (idempotent)."""
    _skip_message_type_checks()
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

    def __init__(self, options: ServerOptions, addons: Sequence[object], front: FrontDoor | None = None) -> None:
        self.options = options
        self.addons = list(addons)
        self.front = front
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._log = _Collect(options.verbose)

    def start(self) -> int:
        """Start listening; raises :class:`AuthsomeError` with mitmproxy's reason when it cannot."""
        ready = threading.Event()
        logger = logging.getLogger("mitmproxy")
        logger.addHandler(self._log)
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="authsome-proxy", daemon=True)
        self._thread.start()
        ready.wait(START_TIMEOUT)
        if not self.port or self._log.errors:  # an addon that failed to configure (e.g. the CA directory) is fatal
            self.stop()
            errors = dict.fromkeys(e.removeprefix("Addon error: ") for e in self._log.errors)
            reason = "; ".join(errors) or (repr(self._error) if self._error else "timed out")
            raise AuthsomeError(f"the proxy did not start: {reason}", "run again with --verbose to see why")
        self._log.collecting = False
        return self.port

    def stop(self) -> None:
        """Shut mitmproxy down and wait for its thread."""
        loop, master = self._loop, self._master
        if loop is not None and master is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                master.shutdown()
        if self._thread is not None:
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
        load_mitmproxy()
        from mitmproxy import options
        from mitmproxy.addons import disable_h2c, next_layer, proxyserver, tlsconfig
        from mitmproxy.master import Master

        from authsome.proxy.dispatch import HookDispatch

        tls_config = tls_addon(tlsconfig.TlsConfig)
        mitm_addons: Any = (proxyserver.Proxyserver, next_layer.NextLayer, tls_config, disable_h2c.DisableH2C)

        self._loop = asyncio.get_running_loop()
        CachingResolver(self._loop, self.options.resolve).install(self._loop)
        opts: Any = options.Options()
        master: Any = Master(opts, event_loop=self._loop)
        HookDispatch.install(master)
        self._master = master
        listening = asyncio.Event()
        started = _Ready(listening)
        # Order matters: authsome's addons decide before mitmproxy's defaults (next_layer, TLS) see an event.
        master.addons.add(*self.addons)
        master.addons.add(*(cls() for cls in mitm_addons), started)
        o = self.options
        opts.update(
            mode=[f"upstream:{o.upstream_proxy}" if o.upstream_proxy else "regular"],
            listen_host="127.0.0.1",
            listen_port=0,
            confdir=str(o.confdir),
            ssl_verify_upstream_trusted_ca=str(o.upstream_trust),
            http2=http2_is_safe(),
            validate_inbound_headers=True,
            connection_strategy="eager",
        )
        run = asyncio.ensure_future(master.run())
        waiter = asyncio.ensure_future(listening.wait())
        await asyncio.wait([run, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        port = 0
        accept = None
        if listening.is_set():
            master.addons.remove(started)  # every addon is asked about every event: keep the chain short
            servers = master.addons.get("proxyserver")
            addrs = servers.listen_addrs()
            port = int(addrs[0][1]) if addrs else 0
            # mitmproxy's per-connection entry point (11.x and 12.x); without it the front door relays over loopback
            accept = next((getattr(s, "handle_stream", None) for s in servers.servers), None)
        if port and self.front is not None:
            try:
                port = await self.front.start(("127.0.0.1", port), accept)
            except OSError as exc:
                self._log.errors.append(f"cannot listen on 127.0.0.1: {exc}")
                port = 0
        self.port = port
        if not self.port:
            master.should_exit.set()
        ready.set()
        try:
            await run
        finally:
            if self.front is not None:
                self.front.close()
