"""Relaying a tunnel inside the kernel: ``splice(2)`` moves bytes socket → pipe → socket without copying them
through Python (Linux only; :func:`available` says whether it can be used).

The relay runs on the event loop with non-blocking descriptors. Each direction reads ahead while its pipe has room
and stops reading when it is full, so at most one pipe's worth of bytes is ever in flight per direction. End of input
in one direction half-closes the other socket; when both directions have ended, or on any error, both sockets are
closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable

PIPE_SIZE = 1 << 20  # asked for; the kernel may grant less (see /proc/sys/fs/pipe-max-size)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


def available() -> bool:
    """Whether this platform has ``splice(2)``."""
    return hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK") and hasattr(fcntl, "F_SETPIPE_SZ")


def _pipe() -> tuple[int, int, int]:
    """A non-blocking pipe as (read end, write end, capacity)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        size = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # a lower pipe-max-size: keep the default
        size = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    return read_end, write_end, size


class _Direction:
    """Bytes from ``src`` to ``dst`` through one pipe, read ahead up to the pipe's capacity."""

    def __init__(self, relay: SpliceRelay, src: socket.socket, dst: socket.socket) -> None:
        self.relay = relay
        self.src = src.fileno()
        self.dst = dst
        self.read_end, self.write_end, self.capacity = _pipe()
        self.pending = 0  # bytes in the pipe
        self.reading = False
        self.waiting = False  # for the destination to take more
        self.eof = False  # src said end of input
        self.ended = False  # ... and everything read has been passed on

    def start(self) -> None:
        self._read(True)

    def close(self) -> None:
        self._read(False)
        self._wait(False)
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _read(self, on: bool) -> None:
        if on != self.reading:
            self.reading = on
            if on:
                self.relay.loop.add_reader(self.src, self._readable)
            else:
                self.relay.loop.remove_reader(self.src)

    def _wait(self, on: bool) -> None:
        if on != self.waiting:
            self.waiting = on
            if on:
                self.relay.loop.add_writer(self.dst.fileno(), self._drain)
            else:
                self.relay.loop.remove_writer(self.dst.fileno())

    def _readable(self) -> None:
        try:
            moved = os.splice(self.src, self.write_end, self.capacity - self.pending, flags=_FLAGS)
        except BlockingIOError:
            return
        except OSError:
            self.relay.close()
            return
        if moved == 0:
            self.eof = True
            self._read(False)
        else:
            self.pending += moved
            if self.pending >= self.capacity:
                self._read(False)  # the pipe is full: read again once the destination has taken some
        self._drain()

    def _drain(self) -> None:
        try:
            while self.pending:
                self.pending -= os.splice(self.read_end, self.dst.fileno(), self.pending, flags=_FLAGS)
        except BlockingIOError:
            pass
        except OSError:
            self.relay.close()
            return
        self._wait(self.pending > 0)
        if self.eof:
            if not self.pending:
                self._end()
        elif not self.reading and self.pending < self.capacity:
            self._read(True)

    def _end(self) -> None:
        self.ended = True
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)
        self.relay.direction_ended()


class SpliceRelay:
    """Relays two connected, non-blocking sockets both ways until both ends are done; once made, it owns and closes
    them (and calls ``on_close``)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, a: socket.socket, b: socket.socket, on_close: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.sockets = (a, b)
        self.on_close = on_close
        self.closed = False
        self.directions: list[_Direction] = []
        try:
            self.directions.append(_Direction(self, a, b))
            self.directions.append(_Direction(self, b, a))
        except OSError:  # no pipe: close what was made; the sockets stay the caller's
            for direction in self.directions:
                direction.close()
            raise

    def start(self) -> None:
        for direction in self.directions:
            direction.start()

    def direction_ended(self) -> None:
        if all(d.ended for d in self.directions):
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for direction in self.directions:
            direction.close()
        for sock in self.sockets:
            sock.close()
        self.on_close()
