"""Where the proxy's decisions go: one ``--verbose`` line per request, and an optional audit callback.

Audit records carry the run's ``context`` (``run_id``, the child's program name) plus the request record.

Nothing here ever holds a secret: records carry the method, host, path (never the query string), provider,
connection, decision and reason. The audit callback is called on the proxy's event loop, in order, and must return at
once: authsome's audit trail queues each record and writes them in batches on its own thread
(:meth:`authsome.store.audit.AuditLog.submit`).

A trail shared by gateway replicas is a :class:`DurableAudit` instead: a request's record is committed when the
request is answered, and the answer waits for the commit (a replica killed right after answering loses no record).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from typing import Literal, TypeAlias

ERROR_HEADER = "X-Authsome-Error"
DecisionKind = Literal["injected", "passthrough", "ambiguous", "refused", "tunnel"]


@dataclass(frozen=True)
class DurableAudit:
    """An audit trail whose records must be committed before the request is answered (PostgreSQL, shared by
    replicas): ``commit(event, record)`` starts writing at once and returns a future done once it is committed."""

    commit: Callable[[str, dict[str, object]], Future[None]]


Audit: TypeAlias = Callable[[dict[str, object]], None] | DurableAudit


@dataclass
class RequestRecord:
    """One request and what the proxy did with it."""

    decision: DecisionKind
    method: str
    host: str
    port: int
    path: str
    provider: str | None = None
    connection: str | None = None
    reason: str | None = None
    status: int | None = None
    duration_ms: float | None = None
    agent: str | None = None  # the gateway agent that sent it (None: the child of `authsome run`)
    # (decision, reason) as committed when the request was answered (a DurableAudit); not part of the record
    answered: tuple[str, str | None] | None = field(default=None, repr=False, compare=False)

    def line(self) -> str:
        """The ``--verbose`` line, e.g. ``injected    openai/default GET api.openai.com/v1/models``."""
        if self.decision == "tunnel":  # a CONNECT relayed untouched: no request inside it is seen
            where = f"[{self.host}]" if ":" in self.host else self.host
            return f"tunnel      {where}:{self.port} ({self.reason})"
        who = f"{self.provider}/{self.connection}" if self.provider else "-"
        where = self.host if self.port == 443 else f"{self.host}:{self.port}"
        text = f"{self.decision:<11} {who} {self.method} {where}{self.path}"
        return f"{text} ({self.reason})" if self.reason and self.decision != "injected" else text

    def to_dict(self) -> dict[str, object]:
        """The audit record's fields (read by name: ``dataclasses.asdict`` costs several times more per request)."""
        data: dict[str, object] = {name: getattr(self, name) for name in _RECORDED}
        if self.agent is not None:  # a run's records stay as they were
            data["agent"] = self.agent
        return data


_RECORDED = tuple(f.name for f in fields(RequestRecord) if f.name not in ("agent", "answered"))


def error_body(code: str, message: str, **details: object) -> bytes:
    """The JSON body of an error the proxy answers itself; ``error.message`` is what SDKs show their user."""
    body = {"error": {"type": "authsome_error", "code": code, "message": f"authsome: {message}"}, **details}
    return json.dumps(body, indent=2).encode() + b"\n"


def path_only(path: str) -> str:
    """The path without query string or fragment (queries may carry keys)."""
    return path.split("?", 1)[0].split("#", 1)[0] or "/"


def stderr_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Reporter:
    """Verbose lines, warnings (always shown, once each) and audit records."""

    def __init__(
        self,
        *,
        verbose: bool = False,
        audit: Audit | None = None,
        write: Callable[[str], None] = stderr_line,
        context: dict[str, object] | None = None,
    ) -> None:
        self.verbose = verbose
        self._audit = audit
        self.context = dict(context or {})
        self._write = write
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._audit_failed = False

    def info(self, text: str, record: RequestRecord | None = None) -> None:
        """A line shown only with ``--verbose``; ``record``: the request it is about (a gateway shows the line to the
        run that sent it)."""
        if self.verbose:
            self._emit(text)

    def warn(self, text: str) -> None:
        """A line always shown, at most once per distinct text."""
        with self._lock:
            if text in self._warned:
                return
            self._warned.add(text)
        self._emit(text)

    def decided(self, record: RequestRecord) -> None:
        if self.verbose:
            self._emit(record.line())

    @property
    def commits_on_answer(self) -> bool:
        """True when a request's audit record is committed before its answer (see :meth:`answering`)."""
        return isinstance(self._audit, DurableAudit)

    def answering(self, record: RequestRecord) -> Future[None] | None:
        """The proxy is about to answer ``record``'s request (its status or its error is known). With a
        :class:`DurableAudit`, the record is committed now, once, and the caller answers when the future is done;
        otherwise there is nothing to wait for (the record goes out when the request is finished)."""
        if not isinstance(self._audit, DurableAudit) or record.answered is not None:
            return None
        record.answered = (record.decision, record.reason)
        return self._commit("request", record)

    def finished(self, record: RequestRecord) -> None:
        if self._audit is None:
            return
        if not isinstance(self._audit, DurableAudit):
            self._send({**self.context, **record.to_dict()})
        elif record.answered is None:  # answered without the proxy core (a relayed tunnel): committed at once
            self._commit("request", record)
        elif record.answered != (record.decision, record.reason):  # changed after the answer (a stream cut, failed)
            self._commit("request_end", record)

    def close(self) -> None:
        """Nothing is pending here: every record went to the audit callback as its request finished."""

    def _send(self, record: dict[str, object]) -> None:
        assert self._audit is not None and not isinstance(self._audit, DurableAudit)
        try:
            self._audit(record)
        except Exception as exc:  # the audit trail must never break the child's requests
            self._audit_error(exc)

    def _commit(self, event: str, record: RequestRecord) -> Future[None] | None:
        assert isinstance(self._audit, DurableAudit)
        try:
            return self._audit.commit(event, {**self.context, **record.to_dict()})
        except Exception as exc:  # (a failed commit is reported by the trail's writer, and the answer still goes)
            self._audit_error(exc)
            return None

    def _audit_error(self, exc: Exception) -> None:
        if not self._audit_failed:
            self._audit_failed = True
            self.warn(f"could not write the audit record ({type(exc).__name__}); later failures are not shown")

    def _emit(self, text: str) -> None:
        with self._lock:
            self._write(f"authsome: {text}")
