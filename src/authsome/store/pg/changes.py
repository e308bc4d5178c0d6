"""Changes made by other replicas, heard as they commit: PostgreSQL's LISTEN/NOTIFY.

Every write of the store notifies the channel ``authsome_changes`` in the transaction that makes it (PostgreSQL
delivers a notification when, and only if, its transaction commits, to every session listening then):
``provider:<name>`` for a custom provider, ``record:<profile>:<key>`` for a connection, an OAuth client or an agent
(the audit trail's head is left out: it moves with every batch). A :class:`Listener` holds one connection of its own
(outside the pools), listens, and calls back on its own thread. A notification sent while it was not connected is
lost, so after each (re)connection it reports :data:`EVERYTHING`: anything may have changed meanwhile.

Wrong proxy credentials go on a channel of their own, ``authsome_failures`` (``<profile>:<origin>:<address>``), so
that a gateway replica's brute-force limit counts the attempts every replica saw: :class:`FailureTeller` sends them
(off the proxy's thread), the :class:`Listener` hears the others' (``origin`` tells this process's own apart).
Notifications are best effort: one sent while a replica was not listening is not counted there.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from authsome.store.pg.database import Database
from authsome.store.pg.schema import Conn

CHANNEL = "authsome_changes"
FAILURES = "authsome_failures"
RETRY = 2.0  # seconds between two attempts to reach a lost database
WAKE = 0.25  # seconds between two checks of the stop flag while nothing arrives (how long a stop waits)
SILENT_PREFIXES = ("audit/",)  # records whose writes notify nobody


@dataclass(frozen=True)
class Change:
    """One change: a custom provider (``profile`` None), a record of a profile, or everything (``kind`` "all")."""

    kind: str  # "provider" | "record" | "all" | "failure"
    profile: str | None = None
    name: str = ""  # the provider's name, the record's key (or key prefix, for a removal by prefix), or an address
    origin: str = ""  # for a failure: the process that saw it (its ORIGIN)


EVERYTHING = Change("all")


def notify_provider(conn: Conn, name: str) -> None:
    """Tell the listeners that custom provider ``name`` changed (sent when ``conn``'s transaction commits)."""
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"provider:{name}"))


def notify_record(conn: Conn, profile: str, key: str) -> None:
    """Tell the listeners that record ``key`` of ``profile`` changed (sent when ``conn``'s transaction commits)."""
    if not key.startswith(SILENT_PREFIXES):
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"record:{profile}:{key}"))


def parse(payload: str) -> Change:
    """A notification's payload as a :class:`Change` (one this version does not know: everything changed)."""
    kind, _, rest = payload.partition(":")
    if kind == "provider" and rest:
        return Change("provider", None, rest)
    profile, _, key = rest.partition(":")
    if kind == "record" and profile and key:
        return Change("record", profile, key)
    return EVERYTHING


ORIGIN = secrets.token_hex(8)  # this process's name on the failures channel (each gateway process is started afresh)


def parse_failure(payload: str) -> Change | None:
    """A failures-channel payload as a ``failure`` :class:`Change` (None when malformed)."""
    profile, _, rest = payload.partition(":")
    source, _, address = rest.partition(":")
    if not (profile and source and address):
        return None
    return Change("failure", profile, address, source)


class FailureTeller:
    """Tells the other replicas of each wrong credential this process counted, on a daemon thread of its own (the
    proxy's thread never waits for the database). A failure that cannot be sent counts only where it was made."""

    def __init__(self, db: Database, profile: str) -> None:
        self.db = db
        self.profile = profile
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="authsome-failures", daemon=True).start()

    def tell(self, address: str) -> None:
        self._queue.put(address)

    def _run(self) -> None:
        while True:
            address = self._queue.get()
            with contextlib.suppress(Exception), self.db.connection() as conn:  # out of reach: dropped
                conn.execute("SELECT pg_notify(%s, %s)", (FAILURES, f"{self.profile}:{ORIGIN}:{address}"))


class Listener:
    """A daemon thread that listens on ``db`` and calls ``on_change`` for every change, in order."""

    def __init__(
        self,
        db: Database,
        on_change: Callable[[Change], None],
        *,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.db = db
        self.on_change = on_change
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="authsome-changes", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self, timeout: float = WAKE + 1) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.db.connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {FAILURES}")
                    self._tell(EVERYTHING)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=WAKE):
                            self._hear(note.channel, note.payload)
            except Exception as exc:  # the database went away (or never came): try again
                self._report(exc)
            self._stop.wait(RETRY)

    def _hear(self, channel: str, payload: str) -> None:
        if channel != FAILURES:
            self._tell(parse(payload))
        elif (failure := parse_failure(payload)) is not None and failure.origin != ORIGIN:
            self._tell(failure)

    def _tell(self, change: Change) -> None:
        try:
            self.on_change(change)
        except Exception as exc:  # one failed reaction must not stop the others
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)
