"""Every place authsome relies on mitmproxy beyond its addon API, named here and nowhere else.

mitmproxy's addon hooks, options, ``Master`` and its documented addons are its API; what follows is not, and a new
mitmproxy release may change it. Each entry says what it touches; ``tests/unit/proxy/test_mitm_internals.py`` checks
each against the installed mitmproxy, and CI runs them on both lines it installs (11.0.x on Python 3.11, 12.x later).

* :func:`load_mitmproxy` — ``mitmproxy.addons`` is imported without its package ``__init__`` (which imports every
  addon, a web framework and an LDAP client); modules a run never uses (:data:`DEFERRED_MODULES`, and the pyparsing
  grammar of ``mitmproxy.command_lexer``) run their bodies on first use.
* ``http.Headers``' look-ups and ``proxy.context.Context.fork`` are made cheaper, with the same results.
* ``http.MessageData.__post_init__`` and ``proxy.utils.expect``'s event checks (type checks that exist only without
  ``-O``) are skipped, and so is ``utils.asyncio_utils.set_task_debug_info``'s look-up of ``PYTEST_CURRENT_TEST``.
* ``HttpUpstreamProxy.on_handshake_error`` keeps a chained proxy's refusal on the server connection.
* ``certs.load_pem_private_key`` loads the CA key without cryptography's RSA re-check.
* :func:`connection_handler` — each proxy server's ``handle_stream``, the per-connection entry point the front door
  hands connections to in-process.
* :func:`install_hook_dispatch` — ``AddonManager``'s ``chain``, ``_iter_hooks``, ``_configure_all`` and
  ``handle_lifecycle``; the ``_handle_event`` of ``HttpStream``, ``NextLayer`` and ``TunnelLayer`` (a wrapper runs
  their hooks in place), ``Context.options`` (where the layers find the dispatcher) and
  ``ProxyConnectionHandler.handle_hook`` (it awaits ``handle_lifecycle``, then the flow's resume).

(:func:`authsome.proxy.tls.tls_addon` subclasses the ``TlsConfig`` addon and overrides its ``get_cert`` and
``running``: an addon's own methods rather than the core's.)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import time
import types
from collections.abc import Awaitable, Sequence
from typing import Any

from authsome.errors import AuthsomeError

_ADDONS_PACKAGE = "mitmproxy.addons"


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
    _one_pass_header_lookups()
    _fork_contexts_without_a_new_server()
    _skip_event_type_checks()
    _skip_test_names_in_tasks()
    _keep_upstream_proxy_errors()
    load_ca_key_without_rsa_recheck()
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


def _one_pass_header_lookups() -> None:
    """``http.Headers`` look-ups (``get``, ``[]``, ``in``, ``get_all``) in one pass over the fields, same results.

    mitmproxy's go from ``Mapping.get`` to ``__getitem__`` to ``get_all``, two name conversions and a static method
    call per field; its HTTP layers read a request's and a response's headers about ten times (body size, keep-alive,
    validation): about a tenth of a keep-alive request. A name that is neither ``str`` nor ``bytes`` goes to
    mitmproxy's own ``get_all`` (and its error).
    """
    from mitmproxy import http

    headers: Any = http.Headers
    if "_authsome_one_pass" in vars(headers):
        return
    original_get_all = headers.get_all

    def get_all(self: Any, name: Any) -> list[str]:
        if isinstance(name, str):
            key = name.encode("utf-8", "surrogateescape").lower()
        elif isinstance(name, bytes):
            key = name.lower()
        else:
            return list(original_get_all(self, name))
        return [value.decode("utf-8", "surrogateescape") for field, value in self.fields if field.lower() == key]

    def get(self: Any, name: Any, default: Any = None) -> Any:
        values = get_all(self, name)
        return ", ".join(values) if values else default

    def __getitem__(self: Any, name: Any) -> str:
        values = get_all(self, name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __contains__(self: Any, name: Any) -> bool:
        return bool(get_all(self, name))

    headers.get_all, headers.get, headers.__getitem__, headers.__contains__ = get_all, get, __getitem__, __contains__
    headers._authsome_one_pass = True


def _fork_contexts_without_a_new_server() -> None:
    """``Context.fork`` (once per request) without making a ``connection.Server`` (and its uuid4) it then drops."""
    from mitmproxy.proxy import context

    cls: Any = context.Context
    if "_authsome_fork" in vars(cls):
        return

    def fork(self: Any) -> Any:
        forked = cls.__new__(cls)
        forked.client, forked.options, forked.server = self.client, self.options, self.server
        forked.layers = self.layers.copy()
        return forked

    cls.fork = fork
    cls._authsome_fork = True


def _skip_event_type_checks() -> None:
    """Build mitmproxy's protocol layers without the event type check each state handler gets unless Python runs with
    ``-O`` (``proxy.utils.expect``: a wrapper around every state handler call, about 1% of keep-alive throughput).

    It must run before the layers are imported (they apply it when their classes are made); if they were imported
    already, their checks stay.
    """
    from mitmproxy.proxy import utils

    if "mitmproxy.proxy.layers" not in sys.modules:
        utils.expect = _unchecked


def _skip_test_names_in_tasks() -> None:
    """Name mitmproxy's tasks as under ``-O``: without reading ``os.environ["PYTEST_CURRENT_TEST"]`` for each one.

    mitmproxy starts a task per hook (four per request) and marks each with the pytest test that made it, which costs
    an environment look-up every time (about 2% of keep-alive throughput). Its ``create_task`` reads this function
    from its module on each call.
    """
    from mitmproxy.utils import asyncio_utils

    asyncio_utils.set_task_debug_info = _set_task_debug_info


def _set_task_debug_info(task: Any, *, name: str, client: tuple[Any, ...] | None = None) -> None:
    """``asyncio_utils.set_task_debug_info`` as under ``python -O``: the creation time, the name, the client."""
    task.created = time.time()
    task.set_name(name)
    if client:
        task.client = client


def _unchecked(*_event_types: type) -> Any:
    """``proxy.utils.expect`` as under ``python -O``: a decorator that leaves the handler as it is."""
    return _unchanged


def _unchanged(handler: Any) -> Any:
    return handler


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


def load_ca_key_without_rsa_recheck() -> None:
    """mitmproxy loads the CA's key with :func:`authsome.proxy.tls.load_private_key` (no RSA re-check)."""
    from mitmproxy import certs

    from authsome.proxy import tls

    certs.load_pem_private_key = tls.load_private_key


def import_mitmproxy() -> None:
    """What a proxy start imports (a quarter of a second): on a worker thread, while the event loop serves."""
    load_mitmproxy()
    for name in ("master", "addons.proxyserver", "addons.next_layer", "addons.tlsconfig", "addons.disable_h2c"):
        importlib.import_module(f"mitmproxy.{name}")
    for name in ("http", "tls", "connection", "proxy.layers", "proxy.mode_specs"):  # what authsome's addons use
        importlib.import_module(f"mitmproxy.{name}")


def connection_handler(proxyserver: Any) -> Any:
    """The in-process handler of a new client connection, ``(reader, writer) -> awaitable`` (mitmproxy 11.x and
    12.x: ``ServerInstance.handle_stream``), or None when this mitmproxy has none (the front door then relays to
    mitmproxy's port over loopback)."""
    return next((getattr(s, "handle_stream", None) for s in proxyserver.servers), None)


def install_hook_dispatch(master: Any) -> Any:
    """Replace the master's (still empty) addon manager with the :func:`hook dispatcher <_hook_dispatch>`."""
    previous = master.addons
    if previous.chain:
        raise RuntimeError("install the hook dispatcher before adding addons")
    master.options.changed.disconnect(previous._configure_all)
    master.addons = dispatch = _hook_dispatch()(master)
    vars(master.options)[_DISPATCH] = dispatch  # (not an option: options refuse unknown names once made)
    _run_hooks_in_place()
    return dispatch


_DISPATCH = "_authsome_hook_dispatch"


def _run_hooks_in_place() -> None:
    """Have the hooks mitmproxy's layers ask for run where they ask, rather than in a task each.

    mitmproxy hands every hook a layer asks for to a new task, and the reply then travels down the whole layer stack
    again: for a keep-alive request (``requestheaders``, ``request``, ``responseheaders``, ``response``) that was a
    fifth of its time; a new intercepted connection has about ten more (``next_layer``, the TLS and CONNECT hooks).
    Here the dispatcher runs the hooks at once (:meth:`run_in_place`) and the layer goes on with mitmproxy's reply to
    a hook (None); a hook that must wait (it returned an awaitable), an intercepted flow, or an ``update`` hook in the
    chain still go the usual way, so nothing an addon sees changes but the timing. Only a layer's own hooks are taken
    (``blocking is True``), not those a child layer has already paused for.
    """
    from mitmproxy.proxy import commands, layer, tunnel
    from mitmproxy.proxy.layers import http

    classes: tuple[Any, ...] = (http.HttpStream, layer.NextLayer, tunnel.TunnelLayer)  # (TLS layers are tunnels)
    for cls in classes:
        if "_authsome_hooks_in_place" not in vars(cls):
            cls._handle_event = _hooks_in_place(cls._handle_event, commands.StartHook)
            cls._authsome_hooks_in_place = True


def _hooks_in_place(handle_event: Any, start_hook: type) -> Any:
    """A layer's ``_handle_event`` whose own hooks the master's dispatcher runs in place when it can."""

    def _handle_event(self: Any, event: Any) -> Any:
        layer_commands = handle_event(self, event)
        reply = None
        while True:
            try:
                command = layer_commands.send(reply)
            except StopIteration:
                return
            reply = None
            if command.blocking is True and isinstance(command, start_hook):
                dispatch = vars(self.context.options).get(_DISPATCH)
                if dispatch is not None and dispatch.run_in_place(command):
                    continue  # handled: the reply to a hook is None
            reply = yield command

    return _handle_event


@functools.cache
def _hook_dispatch() -> type:
    """mitmproxy's addon manager, calling only the addons that implement an event's hook.

    mitmproxy asks every addon about every event — some 25 events per intercepted connection, plus an ``update`` after
    each flow event — entering a context manager and a coroutine for each addon even when it has no such hook. Here
    each event name maps to the (addon, hook) pairs of the current chain, found once with mitmproxy's own lookup and
    found again whenever the chain changes. Hooks run in chain order, an addon's error is logged as mitmproxy logs it
    (its ``safecall``, entered only when a hook raised), and ``AddonHalt`` still stops the chain.

    A layer's hooks may also start in place (:meth:`run_in_place`): the chain runs until a hook returns an
    awaitable, and the hook's task (``handle_lifecycle``) awaits that and runs the rest.
    """
    from mitmproxy import addonmanager, exceptions, flow, hooks

    manager: Any = addonmanager.AddonManager  # untyped in mitmproxy

    class HookDispatch(manager):  # type: ignore[misc]
        """Drop-in for ``master.addons`` (see :func:`install_hook_dispatch`)."""

        def __init__(self, master: Any) -> None:
            super().__init__(master)
            self._hooks: dict[str, list[tuple[Any, Any]]] = {}

        def add(self, *addons: Any) -> None:
            self._hooks.clear()
            super().add(*addons)
            self._hooks.clear()

        def remove(self, addon: Any) -> None:
            self._hooks.clear()
            super().remove(addon)
            self._hooks.clear()

        def clear(self) -> None:
            self._hooks.clear()
            super().clear()
            self._hooks.clear()

        async def handle_lifecycle(self, event: hooks.Hook) -> None:
            """The event, then (for a flow's event) ``update``, as mitmproxy does; but no ``update`` is made when no
            addon has that hook, as none of a run's has (it would follow each of a request's four hooks).

            For a hook begun in place, only what is left of it."""
            begun = getattr(event, "__dict__", {})
            if _REST in begun:
                rest = begun.pop(_REST)
                if rest is not None:
                    await rest
                return
            await self.trigger_event(event)
            if self._found(_UPDATE):
                message = event.args()[0]
                if isinstance(message, flow.Flow):
                    await self.trigger_event(hooks.UpdateHook([message]))

        def _found(self, event: hooks.Hook) -> list[tuple[Any, Any]]:
            found = self._hooks.get(event.name)
            if found is None:
                found = [pair for addon in self.chain for pair in self._iter_hooks(addon, event)]
                self._hooks[event.name] = found
            return found

        async def trigger_event(self, event: hooks.Hook) -> None:
            found = self._found(event)
            if found:
                await self._run(found, event.args())

        def run_in_place(self, hook: hooks.Hook) -> bool:
            """Run ``hook``'s chain now; True when it is done and mitmproxy need not run it (see
            :func:`_run_hooks_in_place`). False when its task must go on: a hook returned an awaitable (the
            task awaits it, then the hooks after it), the flow is intercepted (the task waits for its resume), or an
            addon has ``update`` (mitmproxy's order is the hook's, then update's, in the task)."""
            if self._found(_UPDATE) or not hasattr(hook, "__dict__"):
                return False
            found = self._found(hook)
            args = hook.args() if found else ()
            for index, (_addon, func) in enumerate(found):
                result = None
                try:
                    result = func(*args)
                except exceptions.AddonHalt:
                    break
                except Exception:
                    with addonmanager.safecall():
                        raise
                if result is not None and inspect.isawaitable(result):
                    vars(hook)[_REST] = self._resume(result, found[index + 1 :], args)
                    return False
            if args and getattr(args[0], "intercepted", False):
                vars(hook)[_REST] = None
                return False
            return True

        async def _resume(self, awaiting: Awaitable[Any], rest: list[tuple[Any, Any]], args: Sequence[Any]) -> None:
            try:
                await awaiting
            except exceptions.AddonHalt:
                return
            except Exception:
                with addonmanager.safecall():
                    raise
            await self._run(rest, args)

        async def _run(self, found: list[tuple[Any, Any]], args: Sequence[Any]) -> None:
            for _addon, func in found:
                try:
                    result = func(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
                except exceptions.AddonHalt:
                    return
                except Exception:  # logged by mitmproxy's own safecall (entered only now: it costs on every call)
                    with addonmanager.safecall():
                        raise

    _UPDATE = hooks.UpdateHook([])
    _REST = "_authsome_rest"  # on a hook begun in place: what its task still has to await (None: nothing)
    return HookDispatch
