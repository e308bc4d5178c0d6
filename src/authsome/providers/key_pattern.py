"""Safe ``api_key.key_pattern`` regexes: they must compile and cannot backtrack catastrophically.

A key pattern is matched with ``re.fullmatch`` against a pasted key at login; :func:`check_key_pattern` accepts the
common shapes at once (a fast path for literals and quantified classes) and walks the parse tree of anything else.
"""

from __future__ import annotations

import re
from typing import Any

MAX_KEY_PATTERN_LENGTH = 256
# Fast path: ^? (literal | \escaped | [class] quant?)+ $? ; classes hold only letters, digits, '_', '.', '-'.
_SIMPLE_KEY_RE = re.compile(
    r"\^?(?:[A-Za-z0-9_-]|\\[.\-_]|\[(?:[A-Za-z0-9_.-]|\\-)+\](?:[+*?]|\{[0-9]{1,3}(?:,[0-9]{0,3})?\})?)+\$?"
)
_VARIABLE_RE = re.compile(r"[+*?]|\{[0-9]+,")
_RANGE_RE = re.compile(r"(?<!\\)([A-Za-z0-9])-([A-Za-z0-9])")
_CLASS_RE = re.compile(r"\[([^\]]*)\]")
_COUNT_RE = re.compile(r"\{([0-9]+),([0-9]+)\}")


def _simple_key_pattern(pattern: str) -> bool:
    """Fast path: literals and quantified classes only (no groups), valid ranges, at most two variable repeats."""
    if not _SIMPLE_KEY_RE.fullmatch(pattern) or len(_VARIABLE_RE.findall(pattern)) > 2:
        return False
    ranges = [r for body in _CLASS_RE.findall(pattern) for r in _RANGE_RE.findall(body)]
    ranges_ok = all(lo <= hi and lo.isdigit() == hi.isdigit() for lo, hi in ranges)
    return ranges_ok and all(int(lo) <= int(hi) for lo, hi in _COUNT_RE.findall(pattern))


def check_key_pattern(pattern: str) -> None:
    """Raise ``ValueError`` unless ``pattern`` compiles and cannot backtrack catastrophically.

    Rejected: backreferences, lookarounds, conditionals, a repeated group that itself contains a repeat or an
    alternation (``(a+)+``, ``(a|ab)*``), more than two variable-length repeats and more than four ``?``.
    """
    import importlib

    if len(pattern) > MAX_KEY_PATTERN_LENGTH:
        raise ValueError(f"regex is longer than {MAX_KEY_PATTERN_LENGTH} characters")
    if _simple_key_pattern(pattern):
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    parser = importlib.import_module("re._parser")  # already loaded by re; no public API exposes the parse tree
    const = importlib.import_module("re._constants")
    repeats = {const.MAX_REPEAT, const.MIN_REPEAT, getattr(const, "POSSESSIVE_REPEAT", const.MAX_REPEAT)}
    forbidden = {
        const.GROUPREF: "backreferences are not allowed",
        const.GROUPREF_EXISTS: "conditional groups are not allowed",
        const.ASSERT: "lookarounds are not allowed",
        const.ASSERT_NOT: "lookarounds are not allowed",
    }
    variable = optional = 0

    def walk(items: Any, inside_repeat: bool) -> None:
        nonlocal variable, optional
        for op, av in items:
            if op in forbidden:
                raise ValueError(f"regex {pattern!r}: {forbidden[op]}")
            if op in repeats:
                lo, hi, sub = av
                if hi != lo:
                    if inside_repeat:
                        raise ValueError(f"regex {pattern!r}: nested quantifiers like (a+)+ are not allowed")
                    if hi > 1:
                        variable += 1
                    else:
                        optional += 1
                walk(sub, inside_repeat or hi > 1)
            elif op == const.BRANCH:
                if inside_repeat:
                    raise ValueError(f"regex {pattern!r}: alternation inside a repeated group is not allowed")
                for branch in av[1]:
                    walk(branch, inside_repeat)
            elif op == const.SUBPATTERN:
                walk(av[-1], inside_repeat)
            elif op == getattr(const, "ATOMIC_GROUP", None):
                walk(av, inside_repeat)

    walk(parser.parse(pattern), False)
    if variable > 2 or optional > 4:
        raise ValueError(f"regex {pattern!r}: at most two variable-length repeats (and four '?') are allowed")
