"""Hook dispatch: mitmproxy's addon manager, calling only the addons that implement an event's hook.

mitmproxy asks every addon about every event — some 25 events per intercepted connection, plus an ``update`` after
each flow event — entering a context manager and a coroutine for each addon even when it has no such hook. Here each
event name maps to the (addon, hook) pairs of the current chain, found once with mitmproxy's own lookup and found
again whenever the chain changes. Hooks run in chain order, an addon's error is logged as mitmproxy logs it, and
``AddonHalt`` still stops the chain.
"""

from __future__ import annotations

import inspect
from typing import Any

from mitmproxy import addonmanager, exceptions, hooks

_AddonManager: Any = addonmanager.AddonManager  # untyped in mitmproxy


class HookDispatch(_AddonManager):  # type: ignore[misc]
    """Drop-in for ``master.addons``; install it with :meth:`install` before any addon is added."""

    def __init__(self, master: Any) -> None:
        super().__init__(master)
        self._hooks: dict[str, list[tuple[Any, Any]]] = {}

    @classmethod
    def install(cls, master: Any) -> HookDispatch:
        """Replace the master's (still empty) addon manager."""
        previous = master.addons
        if previous.chain:
            raise RuntimeError("install the hook dispatcher before adding addons")
        master.options.changed.disconnect(previous._configure_all)
        master.addons = cls(master)
        return master.addons  # type: ignore[no-any-return]

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

    async def trigger_event(self, event: hooks.Hook) -> None:
        found = self._hooks.get(event.name)
        if found is None:
            found = [pair for addon in self.chain for pair in self._iter_hooks(addon, event)]
            self._hooks[event.name] = found
        for _addon, func in found:
            try:
                with addonmanager.safecall():
                    result = func(*event.args())
                    if result is not None and inspect.isawaitable(result):
                        await result
            except exceptions.AddonHalt:
                return
