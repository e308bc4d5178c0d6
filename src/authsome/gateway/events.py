"""What the gateway says: one line per decision on stderr, as text or (``--json``) one JSON object per line.

Events: ``listening``, ``request`` (every proxied request and every relayed tunnel, with the agent's name),
``denied`` (a refused proxy credential: who, from where, why), ``draining``, ``stopped``, ``warning`` and, with
``--verbose``, ``info``. No line ever holds a token, a credential or a query string.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from authsome.gateway.runs import RunAgents
from authsome.proxy.auth import Denied
from authsome.proxy.report import Audit, DurableAudit, Reporter, RequestRecord
from authsome.proxy.routing import Ambiguous

Write = Callable[[str], None]
DENIED_QUIET = 60.0  # seconds between two lines about the same locked-out address


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class EventLog:
    """Writes events, one line each; thread-safe."""

    def __init__(self, *, json_lines: bool = False, verbose: bool = False, write: Write = _stderr) -> None:
        self.json_lines = json_lines
        self.verbose = verbose
        self._write = write
        self._lock = threading.Lock()
        self._quiet: dict[str, float] = {}

    def event(self, kind: str, text: str, **fields: Any) -> None:
        """One event: ``text`` is the human line, ``fields`` the JSON object's members."""
        if self.json_lines:
            line = json.dumps({"ts": round(time.time(), 3), "event": kind, **fields}, sort_keys=True, default=str)
        else:
            line = f"authsome gateway: {text}"
        with self._lock:
            self._write(line)

    def request(self, record: RequestRecord) -> None:
        who = f"{record.provider}/{record.connection}" if record.provider else "-"
        where = record.host if record.port == 443 else f"{record.host}:{record.port}"
        text = f"{record.agent or '-'} {record.decision} {who} {record.method} {where}{record.path}"
        if record.status is not None:
            text += f" -> {record.status}"
        if record.duration_ms is not None:
            text += f" ({record.duration_ms:g} ms)"
        if record.reason and record.decision != "injected":
            text += f" [{record.reason}]"
        self.event("request", text, **record.to_dict())

    def denied(self, peer: str | None, agent: str | None, denied: Denied) -> None:
        """A refused proxy credential; a locked-out address is reported once a minute, not at every attempt."""
        if denied.status == 429 and peer is not None:
            now = time.monotonic()
            with self._lock:
                if now < self._quiet.get(peer, 0.0):
                    return
                self._quiet[peer] = now + DENIED_QUIET
        text = f"denied {peer or '-'}{f' agent {agent}' if agent else ''}: {denied.status} {denied.reason}"
        self.event("denied", text, peer=peer, agent=agent, status=denied.status, code=denied.code, reason=denied.reason)

    def info(self, text: str) -> None:
        if self.verbose:
            self.event("info", text, message=text)

    def warning(self, text: str) -> None:
        self.event("warning", f"warning: {text}", message=text)


class GatewayReporter(Reporter):
    """The proxy core's reporter, as the gateway wants it: a line per finished decision, and the audit record.

    With ``runs``, the requests of an ``authsome run`` served here are reported as a run with its own proxy reports
    them: their records carry the run's id and program name, and the run is sent its warnings and (with
    ``--verbose``) its decision lines over its control connection."""

    def __init__(self, log: EventLog, audit: Audit | None, runs: RunAgents | None = None) -> None:
        super().__init__(verbose=log.verbose, audit=_with_run_context(audit, runs), write=log.info)
        self.log = log
        self.runs = runs

    def info(self, text: str, record: RequestRecord | None = None) -> None:
        session = self.runs.session(record.agent) if self.runs is not None and record is not None else None
        if session is not None:
            session.info(text)
        self.log.info(text)

    def warn(self, text: str) -> None:
        with self._lock:
            if text in self._warned:
                return
            self._warned.add(text)
        self.log.warning(text)

    def decided(self, record: RequestRecord) -> None:
        """The gateway's own line comes when the request is finished, with its status; a served run gets its line
        now, as from its own proxy (and the warning its own proxy gives about an ambiguous host)."""
        session = self.runs.session(record.agent) if self.runs is not None else None
        if session is None:
            return
        if record.decision == "ambiguous" and record.reason:
            session.warn(Ambiguous(record.host, tuple(record.reason.split(", "))).message)
        session.info(record.line())

    def finished(self, record: RequestRecord) -> None:
        self.log.request(record)
        super().finished(record)


def _with_run_context(audit: Audit | None, runs: RunAgents | None) -> Audit | None:
    """``audit``, with the context of the served run (its run id and program name) added to each of its records."""
    if audit is None or runs is None:
        return audit

    def with_context(record: dict[str, object]) -> dict[str, object]:
        agent = record.get("agent")
        session = runs.session(agent) if isinstance(agent, str) else None
        return {**session.context, **record} if session is not None else record

    if isinstance(audit, DurableAudit):
        commit = audit.commit
        return DurableAudit(lambda event, record: commit(event, with_context(record)))
    plain = audit
    return lambda record: plain(with_context(record))
