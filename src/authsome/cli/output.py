"""Rendering for the CLI: ``--json`` gives stable machine output, otherwise rich tables (imported lazily)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
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

    def say(self, message: str) -> None:
        """A human status line on stderr (silent with --quiet or --json)."""
        if not self.quiet and not self.json:
            self.console(stderr=True).print(message)

    def error(self, exc: AuthsomeError) -> None:
        """One line on stderr (``Error: … (hint)``); with ``--json`` the error object also goes to stdout."""
        if self.json:
            sys.stdout.write(json.dumps(exc.to_dict(), sort_keys=True) + "\n")
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
