"""An append-only, hash-chained audit trail per profile (``profiles/<name>/audit.jsonl``).

Each line is a JSON object with ``seq``, ``ts``, ``event`` and event fields, ``prev`` (the previous line's ``mac``)
and ``mac`` = HMAC-SHA256 over the canonical encoding of the rest (sorted keys, no spaces), keyed by a subkey of the
master key. A line is written as that canonical encoding with ``mac`` appended last: one encoding per record. Editing,
reordering or deleting a line breaks the chain; the newest ``seq``/``mac`` is also kept in the store, so cutting lines
off the end is detected too. Records never hold secrets, query strings or bodies.

Records are written a batch at a time (group commit): one lock, one ``write``, one ``fsync`` and one update of the
head in the store per batch. :meth:`AuditLog.append` writes a batch of one and returns when it is on disk;
:meth:`AuditLog.submit` queues a record for a background writer (the proxy's requests), which starts a batch at most
``MAX_DELAY`` after its first record and takes at most ``MAX_BATCH`` records; :meth:`AuditLog.flush` returns when
everything queued is on disk. A crash loses at most the records not yet written; a line cut short by one is not part
of the chain (the next batch removes it) and :meth:`AuditLog.verify` still passes on what remains.

A trail that replicas share (:attr:`AuditLog.commits_before_answer`: PostgreSQL) must not lose a request's record when
a replica is killed right after answering: the proxy calls :meth:`AuditLog.commit`, whose batch starts at once (with
whatever else is queued, so records arriving during a commit share the next one), and answers once it is committed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authsome.paths import FILE_MODE, file_lock

if TYPE_CHECKING:
    from authsome.store.backend import RecordStore

HEAD_KEY = "audit/head"
GENESIS = "0" * 64
MAX_DELAY = 0.05  # seconds a queued record may wait before its batch starts
MAX_BATCH = 512  # records per batch
Entry = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`."""

    ok: bool
    records: int
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "problem": self.problem}


class AuditLog:
    """Appends and reads the audit trail of one profile.

    ``vault`` keeps the chain's head; the trail itself is ``audit.jsonl`` in ``directory`` (default: the directory of
    a SQLite store's file). ``on_error`` hears of a batch the background writer could not write (default: one line
    on stderr, once).
    """

    commits_before_answer = False  # this machine's file: a proxied request's record is queued (see the module doc)

    def __init__(
        self,
        vault: RecordStore,
        *,
        directory: Path | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.vault = vault
        if directory is None:
            store_file = getattr(vault, "path", None)
            if not isinstance(store_file, Path):
                raise TypeError("the audit trail needs a directory when the store is not a local file")
            directory = store_file.parent
        self.path: Path = directory / "audit.jsonl"
        self.lock_path = directory / "audit.lock"
        self._key: bytes | None = None
        self._writer: _GroupWriter | None = None
        self._writer_lock = threading.Lock()
        self._on_error = on_error or _warn_once()

    def _mac_key(self) -> bytes:
        if self._key is None:
            from authsome.store import crypto

            self._key = crypto.subkey(self.vault.master_key(), "audit-chain")
        return self._key

    def _mac(self, body: Mapping[str, Any]) -> str:
        return self._mac_of(_canonical(body))

    def _mac_of(self, canonical: str) -> str:
        from authsome.store import crypto

        return crypto.mac(self._mac_key(), canonical.encode())

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Add one record and return it once it is on disk."""
        return self.append_many([(event, fields)])[0]

    def append_many(self, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        """Add records in order, as one batch: one lock, one write, one fsync, one head update."""
        if not entries:
            return []
        self._mac_key()  # load the key before taking the lock (a keyring may prompt)
        with file_lock(self.lock_path):
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
            try:
                records, lines = self._chained(_last_record(fd), entries)
                _write_all(fd, "".join(line + "\n" for line in lines).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        # The head moves forward only, outside the trail's lock: a refresh holds the store's lock while it appends.
        seq, mac = records[-1]["seq"], records[-1]["mac"]
        with self.vault.transaction() as txn:
            head = txn.vault.read(HEAD_KEY) or {}
            if head.get("seq", 0) < seq:
                txn.write(HEAD_KEY, {"seq": seq, "mac": mac}, {})
        return records

    def _chained(
        self, last: Mapping[str, Any] | None, entries: Sequence[Entry]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """``entries`` as records that extend the chain after ``last`` (None: the trail is empty), and their lines."""
        seq, prev = (int(last["seq"]), str(last["mac"])) if last else (0, GENESIS)
        records, lines, now = [], [], round(time.time(), 3)
        for event, fields in entries:
            seq += 1
            body = {"seq": seq, "ts": now, "event": event, **fields, "prev": prev}
            body.pop("mac", None)  # (the record's own, never a field's)
            canonical = _canonical(body)
            prev = body["mac"] = self._mac_of(canonical)
            records.append(body)
            lines.append(f'{canonical[:-1]},"mac":"{prev}"}}')  # the canonical body with its MAC last
        return records, lines

    def submit(self, event: str, **fields: Any) -> None:
        """Queue one record for the background writer; it is on disk at most ``MAX_DELAY`` plus a write later."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = _GroupWriter(self)
        self._writer.put((event, fields))

    def commit(self, event: str, **fields: Any) -> Future[None]:
        """Queue one record for a batch that starts at once; the future is done once it is committed (or holds the
        error, also reported to ``on_error``)."""
        done: Future[None] = Future()
        with self._writer_lock:
            if self._writer is None:
                self._writer = _GroupWriter(self)
        self._writer.put((event, fields), done)
        return done

    def flush(self) -> None:
        """Return when every record queued so far by :meth:`submit` is on disk (or its batch failed, reported)."""
        if self._writer is not None:
            self._writer.flush()

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first (unparseable lines are skipped; ``verify`` reports them)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        return  # a write cut short by a crash: not a record
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
        except FileNotFoundError:
            return

    def verify(self) -> VerifyResult:
        """Check every line's MAC, the chain links and the head kept in the store."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        return self.check_chain(text.split("\n")[:-1])  # the last piece is "" or a line cut short by a crash

    def check_chain(self, lines: Iterable[str]) -> VerifyResult:
        """Check the trail's ``lines`` (oldest first) and the head kept in the store: what :meth:`verify` does with
        wherever a backend keeps them (the file here, rows in PostgreSQL)."""
        prev, count = GENESIS, 0
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                body = {k: v for k, v in record.items() if k != "mac"}
            except (ValueError, AttributeError):
                return VerifyResult(False, count, f"line {number} is not a JSON record")
            if record.get("seq") != count + 1:
                return VerifyResult(False, count, f"line {number}: expected seq {count + 1}, found {record.get('seq')}")
            if record.get("prev") != prev:
                return VerifyResult(False, count, f"line {number} (seq {record.get('seq')}): chain broken before it")
            if record.get("mac") != self._mac(body):
                return VerifyResult(False, count, f"line {number} (seq {record.get('seq')}) was altered")
            prev, count = record["mac"], count + 1
        head = self.vault.read(HEAD_KEY) or {}
        if head.get("seq", 0) > count:
            return VerifyResult(False, count, f"records after seq {count} were removed (the last was {head['seq']})")
        if head.get("seq") == count and count and head.get("mac") != prev:
            return VerifyResult(False, count, f"the last record (seq {count}) was replaced")
        return VerifyResult(True, count)


class _GroupWriter:
    """One background (daemon) thread writing queued records in batches, in order."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._queue: list[Entry] = []
        self._waiting: list[Future[None] | None] = []  # per queued record: who waits for its commit (commit())
        self._urgent = 0  # queued records someone waits for: their batch does not wait out the delay
        self._first_at = 0.0  # when the oldest queued record arrived
        self._queued = self._done = 0  # records put, records whose batch is over
        self._flushing = 0  # callers waiting in flush(): no batch waits out the delay meanwhile
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="authsome-audit", daemon=True).start()

    def put(self, entry: Entry, done: Future[None] | None = None) -> None:
        with self._cond:
            if not self._queue:
                self._first_at = time.monotonic()
            self._queue.append(entry)
            self._waiting.append(done)
            self._queued += 1
            if done is not None:
                self._urgent += 1
            if len(self._queue) == 1 or len(self._queue) >= MAX_BATCH or done is not None:
                self._cond.notify_all()

    def flush(self) -> None:
        with self._cond:
            target = self._queued
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._done < target:
                    self._cond.wait()
            finally:
                self._flushing -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                while len(self._queue) < MAX_BATCH and not self._flushing and not self._urgent:
                    left = self._first_at + MAX_DELAY - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                waiting = [done for done in self._waiting[:MAX_BATCH] if done is not None]
                self._waiting = self._waiting[MAX_BATCH:]
                self._urgent -= len(waiting)
                if self._queue:
                    self._first_at = 0.0  # they have waited already: the next batch starts at once
            try:
                self.log.append_many(batch)
            except Exception as exc:  # the trail must never stop the proxy; the user is told
                self.log._on_error(exc)
                for done in waiting:
                    done.set_exception(exc)
            else:
                for done in waiting:
                    done.set_result(None)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()


def _warn_once() -> Callable[[BaseException], None]:
    warned = False

    def warn(exc: BaseException) -> None:
        nonlocal warned
        if not warned:
            warned = True
            sys.stderr.write(
                f"authsome: could not write the audit trail ({type(exc).__name__}); later failures are not shown\n"
            )

    return warn


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # (json.dumps builds an encoder per call)


def _canonical(body: Mapping[str, Any]) -> str:
    """What a record's MAC covers: its fields but ``mac``, as JSON with sorted keys and no spaces."""
    return _CANONICAL.encode(body)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _last_record(fd: int) -> dict[str, Any] | None:
    """The last record of the open trail; a line cut short by a crash (no newline yet) is cut off first."""
    size = os.fstat(fd).st_size
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        whole = data.rfind(b"\n") + 1  # data[:whole] ends with a whole line
        if whole == 0 and start > 0:
            chunk *= 2
            continue
        if start + whole < size:
            size = start + whole
            os.ftruncate(fd, size)
        lines = data[:whole].rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or start == 0:
            break
        chunk *= 2
    try:
        record = json.loads(lines[-1]) if lines[-1].strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
