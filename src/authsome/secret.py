"""A wrapper that keeps secret strings out of reprs, logs, tracebacks and f-strings by accident."""

from __future__ import annotations

from typing import Any, NoReturn

REDACTED = "***"


class Secret:
    """A secret string. ``str()``/``repr()``/``format()`` print ``***``; ``.reveal()`` is the one way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the real value. Call only where the value must leave the process (a header, an export)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret values are not picklable")

    def __getstate__(self) -> Any:
        raise TypeError("Secret values are not picklable")
