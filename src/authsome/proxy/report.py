"""Where the proxy's decisions go: one ``--verbose`` line per request, and an optional audit callback.

Audit records carry the run's ``context`` (``run_id``, the child's program name) plus the request record.

Nothing here ever holds a secret: records carry the method, host, path (never the query string), provider,
connection, decision and reason. The audit callback is called on the proxy's event loop, in order, and must return at
once: authsome's audit trail queues each record and writes them in batches on its own thread
(:meth:`authsome.store.audit.AuditLog.submit`).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

ERROR_HEADER = "X-Authsome-Error"
DecisionKind = Literal["injected", "passthrough", "ambiguous", "refused", "tunnel"]
Audit = Callable[[dict[str, object]], None]


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

    def line(self) -> str:
        """The ``--verbose`` line, e.g. ``injected    openai/default GET api.openai.com/v1/models``."""
        who = f"{self.provider}/{self.connection}" if self.provider else "-"
        where = self.host if self.port == 443 else f"{self.host}:{self.port}"
        text = f"{self.decision:<11} {who} {self.method} {where}{self.path}"
        return f"{text} ({self.reason})" if self.reason and self.decision != "injected" else text

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        if self.agent is None:
            del data["agent"]  # a run's records stay as they were
        return data


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

    def info(self, text: str) -> None:
        """A line shown only with ``--verbose``."""
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

    def finished(self, record: RequestRecord) -> None:
        if self._audit is not None:
            self._send({**self.context, **record.to_dict()})

    def close(self) -> None:
        """Nothing is pending here: every record went to the audit callback as its request finished."""

    def _send(self, record: dict[str, object]) -> None:
        assert self._audit is not None
        try:
            self._audit(record)
        except Exception as exc:  # the audit trail must never break the child's requests
            if not self._audit_failed:
                self._audit_failed = True
                self.warn(f"could not write the audit record ({type(exc).__name__}); later failures are not shown")

    def _emit(self, text: str) -> None:
        with self._lock:
            self._write(f"authsome: {text}")
