"""One worker process of ``authsome gateway serve --workers N``: the gateway's proxy core on an inherited socket.

The supervisor (:mod:`authsome.gateway.workers`) starts it as ``authsome gateway worker --fds L,C --index I``: ``L``
is the listening socket every worker accepts from, ``C`` its :class:`~authsome.gateway.channel.Channel` to the
supervisor. It reads its options from the channel, learns the agents of the runs being served (and keeps learning
them, acknowledging each change before the supervisor lets the run go on), and only then accepts connections. When
the supervisor goes away, however it goes, the channel ends and the worker drains and exits like a gateway told to
stop. Its log lines name it (``worker``, ``worker_pid``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authsome.errors import AuthsomeError
from authsome.gateway.channel import Channel, decode_agent, decode_options
from authsome.gateway.events import EventLog
from authsome.gateway.runs import RunAgents, RunSession

if TYPE_CHECKING:
    from authsome.gateway.service import GatewayConfig

SYNC_TIMEOUT = 60.0
BACKLOG = 1024  # the shared accept queue's length
MAX_EARLY_FAILURES = 100_000  # wrong credentials a new worker keeps before it can count them
HINT = "a worker is started by `authsome gateway serve --workers N`, not by hand"


@dataclass(frozen=True)
class WorkerLink:
    """What a worker inherits: the listening socket, its channel to the supervisor (descriptors), its number."""

    listen_fd: int
    channel_fd: int
    index: int


class FairListener(socket.socket):
    """The shared listening socket as a worker's event loop uses it: one connection per turn of the loop.

    asyncio accepts up to 100 waiting connections each time the socket is readable, so the first worker awake would
    take every connection of a burst; here it takes one and lets the loop turn, and the other workers (woken too) take
    the next ones, a busy worker taking fewer. (asyncio also calls ``listen(100)``: the queue stays ``BACKLOG`` long.)
    """

    _took = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self._took:
            self._took = False
            raise BlockingIOError(errno.EAGAIN, "one connection per turn of the loop")
        accepted = super().accept()
        self._took = True
        return accepted

    def listen(self, backlog: int = BACKLOG) -> None:
        super().listen(max(backlog, BACKLOG))


class WorkerLog(EventLog):
    """The gateway's event lines, each naming the worker that wrote it."""

    def __init__(self, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.pid = os.getpid()

    def event(self, kind: str, text: str, **fields: Any) -> None:
        super().event(kind, f"worker {self.index}: {text}", **fields, worker=self.index, worker_pid=self.pid)


class WorkerChannel:
    """The worker's end of the channel: the run agents as the supervisor tells them, and the signal to stop."""

    def __init__(self, link: WorkerLink, stop: threading.Event) -> None:
        self.link = link
        self.stop = stop
        self.runs = RunAgents()
        self.synced = threading.Event()
        self.flush: Callable[[], None] | None = None  # the audit trail's: a run's records on disk before it is told
        self._heard_failure: Callable[[str], None] | None = None  # a wrong credential another worker saw
        self._early_failures: list[str] = []  # heard before the proxy core was there to count them
        self._failures_lock = threading.Lock()
        try:
            self.channel = Channel(socket.socket(fileno=link.channel_fd), "worker")
        except OSError:
            raise AuthsomeError("this worker has no supervisor", HINT) from None
        self._messages = self.channel.messages()

    def options(self) -> dict[str, Any]:
        """The worker's options (``GatewayOptions`` keyword arguments): the supervisor's first message."""
        first = next(self._messages, None)
        if first is None or first.get("op") != "options":
            raise AuthsomeError("this worker's supervisor is gone", HINT)
        return decode_options(first["options"])

    def start(self) -> None:
        threading.Thread(target=self._read, name="authsome-worker-channel", daemon=True).start()

    def listening_socket(self) -> socket.socket:
        """The shared listening socket, once every run agent that exists is known here."""
        if not self.synced.wait(SYNC_TIMEOUT) or self.stop.is_set():
            raise AuthsomeError("the supervisor did not tell this worker the runs it serves", HINT)
        return FairListener(fileno=self.link.listen_fd)

    def serving(self, port: int) -> None:
        self.channel.send({"op": "serving", "pid": os.getpid(), "port": port})

    def hear_failures(self, heard: Callable[[str], None]) -> None:
        """From now on, ``heard(address)`` for each wrong credential another worker saw (and at once for those the
        supervisor told before: a new worker hears of the failures still counted before it serves)."""
        with self._failures_lock:
            self._heard_failure = heard
            early, self._early_failures = self._early_failures, []
        for address in early:
            heard(address)

    def failed(self, address: str) -> None:
        """A wrong proxy credential from ``address`` here: the other workers count it too (via the supervisor)."""
        self.channel.send({"op": "failed", "address": address})

    def close(self) -> None:
        self.channel.close()

    def _read(self) -> None:
        for message in self._messages:
            op = message.get("op")
            if op == "synced":
                self.synced.set()
                continue
            if op == "failed":  # (not acknowledged: nobody waits for it)
                if isinstance(message.get("address"), str):
                    self._hear_failure(message["address"])
                continue
            # A malformed change is acknowledged all the same (nobody must wait for it); RuntimeError: the
            # authenticator's cache changed while a dropped agent was swept from it (from this thread).
            with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError, RuntimeError):
                self._apply(op, message)
            self.channel.send({"op": "ack"})
        self.stop.set()  # the supervisor is gone: finish what is under way, then exit
        self.synced.set()

    def _hear_failure(self, address: str) -> None:
        with self._failures_lock:
            heard = self._heard_failure
            if heard is None:
                if len(self._early_failures) < MAX_EARLY_FAILURES:
                    self._early_failures.append(address)
                return
        heard(address)

    def _apply(self, op: object, message: Mapping[str, Any]) -> None:
        if op == "add":
            self.runs.put(decode_agent(message["agent"]))
        elif op == "begin":
            name = str(message["agent"])
            context = {str(k): str(v) for k, v in dict(message.get("context") or {}).items()}
            self.runs.begin(name, RunSession(context, bool(message.get("verbose")), self._lines(name)))
        elif op == "drop":
            self.runs.drop(str(message["agent"]))
            if self.flush is not None:
                self.flush()

    def _lines(self, name: str) -> Callable[[Mapping[str, object]], None]:
        """Where run ``name``'s lines go: to the supervisor, which holds the run's connection."""

        def send(line: Mapping[str, object]) -> None:
            self.channel.send({"op": "line", "agent": name, "message": dict(line)})

        return send


Core = Callable[["GatewayConfig", EventLog, "WorkerChannel | None"], int]


def serve_worker(config: GatewayConfig, core: Core) -> int:
    """Serve as worker ``config.options.worker`` with the gateway's ``core`` until stopped or orphaned; exit code."""
    from authsome.gateway.service import GatewayOptions

    link = config.options.worker
    assert link is not None
    channel = WorkerChannel(link, config.stop)
    channel.flush = config.flush_audit
    try:
        options = GatewayOptions(**channel.options(), worker=link)
        log = WorkerLog(link.index, json_lines=options.json_log, verbose=options.verbose)
        channel.start()
        return core(dataclasses.replace(config, options=options, log=log), log, channel)
    except AuthsomeError as exc:  # the supervisor says why when it cannot start its workers
        channel.channel.send({"op": "error", "message": exc.message, "hint": exc.hint})
        raise
    finally:
        channel.close()
