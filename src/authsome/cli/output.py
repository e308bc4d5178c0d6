"""Rendering for the CLI: ``--json`` gives stable machine output, otherwise rich tables (imported lazily)."""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authsome.errors import AuthsomeError

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Output:
    """Where and how a command prints; set from the global flags."""

    json: bool = False
    quiet: bool = False
    verbose: bool = False
    no_color: bool = False

    def console(self, stderr: bool = False) -> Console:
        from rich.console import Console

        no_color = self.no_color or "NO_COLOR" in os.environ
        return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=True)

    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """Print ``data`` as JSON with ``--json``, else call ``human`` (unless ``--quiet``)."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        elif human is not None and not self.quiet:
            human()

    def error(self, exc: AuthsomeError) -> None:
        """Print ``exc`` once: with ``--json`` its JSON object on stdout (nothing on stderr), else ``Error: …`` and
        ``Hint: …`` on stderr."""
        if self.json:
            sys.stdout.write(json.dumps(exc.to_dict(), sort_keys=True) + "\n")
            return
        line = f"Error: {exc.message}"
        if exc.hint:
            line += f"\nHint: {exc.hint}"
        sys.stderr.write(line + "\n")


def relative_expiry(expires_at: float | None, now: float | None = None) -> str:
    """'expires in 59m', 'expired 2h ago', or '' when there is no expiry."""
    if expires_at is None:
        return ""
    delta = expires_at - (time.time() if now is None else now)
    text = _span(abs(delta))
    return f"expires in {text}" if delta >= 0 else f"expired {text} ago"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m" if seconds % 3600 >= 60 else f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def iso_time(timestamp: float) -> str:
    """Unix seconds as ISO 8601 in UTC, to the second: ``2026-05-01T12:00:00Z``."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, value)`` for every leaf of nested mappings, in order: one ``key: value`` line each."""
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def plain(value: Any) -> str:
    """A value as a person reads it: lists joined with commas, booleans as yes/no, nothing for None."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value)
    return "" if value is None else str(value)
