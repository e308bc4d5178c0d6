"""The audit trail in PostgreSQL: one hash chain per profile, appended to by every replica.

The records and their chain are those of the local trail (:mod:`authsome.store.audit`: ``seq``, ``prev``, ``mac``,
the head kept in the records as ``audit/head``); only where the lines live differs: rows of ``authsome_audit``.
A batch is one transaction that takes the profile's audit lock (``pg_advisory_xact_lock``), reads the last record,
inserts the batch and moves the head, so replicas append in turn to one global chain, and a batch is either all in
the trail (committed) or not at all. ``authsome log --verify`` checks every record, whichever replica wrote it.

A proxied request's record is committed before the request is answered (:attr:`PgAuditLog.commits_before_answer`):
a replica killed right after answering loses no record. Concurrent requests share a commit (group commit without
a delay: the records that arrive while one batch commits make the next).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from authsome.store.audit import HEAD_KEY, AuditLog, Entry, VerifyResult
from authsome.store.pg.schema import lock_id
from authsome.store.pg.vault import PgTransaction, PgVault

PAGE = 1000  # records read per query


class PgAuditLog(AuditLog):
    """The audit trail of one profile in the shared database."""

    commits_before_answer = True

    def __init__(
        self, vault: PgVault, directory: Path, *, on_error: Callable[[BaseException], None] | None = None
    ) -> None:
        super().__init__(vault, directory=directory, on_error=on_error)  # (the local trail's paths stay unused)
        self.pg = vault
        self._lock = lock_id(vault.profile, "audit")

    def append_many(self, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        """Add records in order, as one transaction: committed when this returns (or with the caller's transaction,
        when one is open on this thread)."""
        if not entries:
            return []
        self._mac_key()  # load the keys before taking the lock (a keyring may prompt)
        self.pg.master_key()
        current = self.pg.current()
        if current is not None:
            return self._append(current, entries)
        # Two round trips, pipelined: (begin, lock, read the last record), then (insert, move the head, commit). The
        # read is a statement of its own, after the lock: it sees what the previous holder committed.
        with self.pg.db.connection() as conn, self.pg.db.errors(), conn.pipeline(), conn.transaction():
            return self._append(PgTransaction(self.pg, conn), entries)

    def _append(self, txn: PgTransaction, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        txn.conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock,))
        row = txn.conn.execute(
            "SELECT line FROM authsome_audit WHERE profile = %s ORDER BY seq DESC LIMIT 1", (self.pg.profile,)
        ).fetchone()
        records, lines = self._chained(json.loads(row[0]) if row else None, entries)
        with txn.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO authsome_audit (profile, seq, line) VALUES (%s, %s, %s)",
                [(self.pg.profile, r["seq"], line) for r, line in zip(records, lines, strict=True)],
            )
        txn.write(HEAD_KEY, {"seq": records[-1]["seq"], "mac": records[-1]["mac"]}, {})
        return records

    def _lines(self) -> Iterator[str]:
        after = 0
        while True:
            with self.pg.db.connection() as conn:
                rows = conn.execute(
                    "SELECT seq, line FROM authsome_audit WHERE profile = %s AND seq > %s ORDER BY seq LIMIT %s",
                    (self.pg.profile, after, PAGE),
                ).fetchall()
            for seq, line in rows:
                after = int(seq)
                yield str(line)
            if len(rows) < PAGE:
                return

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first."""
        for line in self._lines():
            try:
                yield json.loads(line)
            except ValueError:
                continue

    def verify(self) -> VerifyResult:
        """Check every record's MAC, the chain links and the head kept in the records."""
        return self.check_chain(self._lines())
