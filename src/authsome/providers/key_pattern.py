"""``api_key.key_pattern``: a regex a pasted key must match at login, compiled with RE2 (linear time, whatever the
pattern: see :mod:`authsome.providers.linear_regex`)."""

from __future__ import annotations

from authsome.providers.linear_regex import compile_linear

MAX_KEY_PATTERN_LENGTH = 256


def check_key_pattern(pattern: str) -> None:
    """Raise ``ValueError`` (the reason in words) unless ``pattern`` is short enough and RE2 compiles it."""
    if len(pattern) > MAX_KEY_PATTERN_LENGTH:
        raise ValueError(f"regex is longer than {MAX_KEY_PATTERN_LENGTH} characters")
    try:
        compile_linear(pattern)
    except ValueError as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


def key_matches(pattern: str, key: str) -> bool:
    """Whether the whole of ``key`` matches ``pattern`` (checked by :func:`check_key_pattern` when loaded)."""
    return compile_linear(pattern).fullmatch(key) is not None
