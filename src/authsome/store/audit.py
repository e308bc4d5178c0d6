"""An append-only, hash-chained audit trail per profile (``profiles/<name>/audit.jsonl``).

Each line is a JSON object with ``seq``, ``ts``, ``event`` and event fields, ``prev`` (the previous line's ``mac``)
and ``mac`` = HMAC-SHA256 over the canonical line, keyed by a subkey of the master key. Editing, reordering or
deleting a line breaks the chain; the newest ``seq``/``mac`` is also kept in the store, so cutting lines off the end
is detected too. Records never hold secrets, query strings or bodies.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsome.paths import FILE_MODE, file_lock
from authsome.store.vault import Vault

HEAD_KEY = "audit/head"
GENESIS = "0" * 64


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`."""

    ok: bool
    records: int
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "problem": self.problem}


class AuditLog:
    """Appends and reads the audit trail of one profile."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.path: Path = vault.path.parent / "audit.jsonl"
        self.lock_path = vault.path.parent / "audit.lock"
        self._key: bytes | None = None

    def _mac_key(self) -> bytes:
        if self._key is None:
            from authsome.store import crypto

            self._key = crypto.subkey(self.vault.master_key(), "audit-chain")
        return self._key

    def _mac(self, body: Mapping[str, Any]) -> str:
        from authsome.store import crypto

        return crypto.mac(self._mac_key(), _canonical(body))

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Add one record (under a cross-process lock) and return it."""
        self._mac_key()  # load the key before taking the lock (a keyring may prompt)
        with file_lock(self.lock_path):
            last = _last_line(self.path)
            prev_seq, prev_mac = (last["seq"], last["mac"]) if last else (0, GENESIS)
            body = {"seq": prev_seq + 1, "ts": round(time.time(), 3), "event": event, **fields, "prev": prev_mac}
            record = {**body, "mac": self._mac(body)}
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
            try:
                os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            with self.vault.transaction() as txn:
                txn.write(HEAD_KEY, {"seq": record["seq"], "mac": record["mac"]}, {})
        return record

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first (unparseable lines are skipped; ``verify`` reports them)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
        except FileNotFoundError:
            return

    def verify(self) -> VerifyResult:
        """Check every line's MAC, the chain links and the head kept in the store."""
        prev, count = GENESIS, 0
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
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


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _last_line(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            chunk = 4096
            while True:
                start = max(0, size - chunk)
                fh.seek(start)
                data = fh.read(size - start)
                lines = data.rstrip(b"\n").split(b"\n")
                if len(lines) > 1 or start == 0:
                    last = lines[-1]
                    break
                chunk *= 2
    except FileNotFoundError:
        return None
    if not last.strip():
        return None
    try:
        record = json.loads(last)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
