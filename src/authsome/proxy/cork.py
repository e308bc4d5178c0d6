"""A transport that sends what is written in one turn of the event loop with one system call.

mitmproxy writes a message in pieces, each its own TLS record: a response's head, then its body; a POST's head, then
its body. Each piece was a ``send()`` of its own, the largest single cost of a keep-alive request in the proxy's
profile. :class:`CorkedTransport` keeps the pieces written while one event is handled and sends them together once
the loop has handled it (``call_soon``), or before a ``close()``/``write_eof()``. The bytes and their order are
unchanged; nothing waits longer than the loop's current turn, and once :data:`FLUSH_AT` bytes are pending they go out
at once (a large body is not held, and the wrapped transport's flow control sees it as before).

Only mitmproxy's connections are corked (the client's, handed over by the front door, and mitmproxy's upstream
connections); the front door's own relays move bytes as they come.
"""

from __future__ import annotations

import asyncio
from typing import Any

FLUSH_AT = 64 * 1024  # bytes pending that are sent without waiting for the end of the turn


class CorkedTransport(asyncio.Transport):
    """Wraps a connected transport; everything but ``write`` is the wrapped transport's own."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._inner = inner
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is pending now (nothing when the connection is closing: the wrapped transport would drop it)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self._inner.is_closing():
            self._inner.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()
