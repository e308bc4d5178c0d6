"""Regexes from provider files, compiled with RE2: a match takes time linear in the text, whatever the pattern.

Python's backtracking :mod:`re` can take exponential time on a pattern such as ``(a+)+$``; RE2 (``google-re2``)
cannot, so no grammar is needed to keep a provider's pattern from stalling the proxy or a login. RE2 refuses what it
cannot run in linear time (backreferences, lookarounds); :func:`compile_linear` says so in words. ``re2`` is imported
on first use, so commands that compile no pattern do not load it.
"""

from __future__ import annotations

from typing import Protocol


class LinearPattern(Protocol):
    """A compiled RE2 pattern (only what authsome uses of it)."""

    def fullmatch(self, text: str) -> object | None:
        """A match object when the whole of ``text`` matches, else None."""


def compile_linear(pattern: str) -> LinearPattern:
    """``pattern`` compiled with RE2 (no capture groups, nothing logged); ``ValueError`` with RE2's reason in words."""
    import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

    options = re2.Options()
    options.log_errors = False  # RE2 would print each refused pattern to stderr
    options.never_capture = True  # only whether it matches is asked: faster
    try:
        compiled: LinearPattern = re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(_reason(pattern, exc)) from None
    return compiled


def _reason(pattern: str, exc: Exception) -> str:
    """RE2's error (``invalid perl operator: (?=``) in words, for a pattern it refuses."""
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    kind, _, where = text.partition(": ")
    if where.startswith(("(?=", "(?!", "(?<=", "(?<!")):
        return "lookarounds are not allowed (RE2 matches in linear time and has none)"
    if (kind == "invalid escape sequence" and where[1:2].isdigit()) or "(?P=" in pattern:
        return "backreferences are not allowed (RE2 matches in linear time and has none)"
    return text or "RE2 cannot compile it"
