"""How the proxy's event loop turns upstream host names into socket addresses.

* **A short-lived cache.** mitmproxy resolves the upstream host for every new connection; a run talks to a handful of
  API hosts over and over, so each (host, port, …) answer is kept for :data:`TTL` seconds and concurrent lookups of
  the same name share one query. Failures are not kept.
* **Test stand-ins.** A table maps (host, port) to another socket address, names unchanged: mitmproxy still sees the
  real host name, so SNI, certificate checks and routing behave exactly as against the real server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from authsome.providers.hosts import canonical_host

Address = tuple[str, int]
TTL = 30.0
MAX_ENTRIES = 256


class CachingResolver:
    """``loop.getaddrinfo`` with a per-run cache and an optional stand-in table."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, table: Mapping[Address, Address] | None = None, ttl: float = TTL
    ) -> None:
        self._real = loop.getaddrinfo
        self._table = dict(table or {})
        self._ttl = ttl
        self._answers: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.getaddrinfo = self.getaddrinfo  # type: ignore[method-assign]

    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        host, port = self._stand_in(host, port)
        key = (host, port, family, type, proto, flags)
        now = time.monotonic()
        cached = self._answers.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return await asyncio.shield(cached[1])
        answer = asyncio.ensure_future(self._real(host, port, family=family, type=type, proto=proto, flags=flags))
        answer.add_done_callback(lambda done: self._forget_failure(key, done))
        if len(self._answers) >= MAX_ENTRIES:
            self._answers.pop(next(iter(self._answers)))
        self._answers[key] = (now, answer)
        return await asyncio.shield(answer)

    def _forget_failure(self, key: tuple[Any, ...], done: asyncio.Future[Any]) -> None:
        """A failed lookup is asked again next time (and its error counts as seen when nobody waited for it)."""
        if done.cancelled() or done.exception() is not None:
            cached = self._answers.get(key)
            if cached is not None and cached[1] is done:
                del self._answers[key]

    def _stand_in(self, host: Any, port: Any) -> tuple[Any, Any]:
        if not self._table:
            return host, port
        try:
            key = (canonical_host(host.decode() if isinstance(host, bytes) else str(host)), int(port))
        except (TypeError, ValueError):
            return host, port
        return self._table.get(key, (host, port))
