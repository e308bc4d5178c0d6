"""Checks of single JSON values in a provider definition, each failing with one line that names the file and field.

``provider file acme.json: oauth.token_url: must be an https:// URL`` — :class:`Where` builds that line; the
functions here check one value each (an object's keys, a string, a choice, a URL, an environment variable name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from authsome.errors import UsageError
from authsome.providers.hosts import InvalidPort, split_host_port

HINT = "fix the provider definition; `authsome inspect openai --json` shows a valid one to start from"
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
URL_RE = re.compile(r"(https?)://([^/?#@\s\\]+)((?:[/?][^\s#]*)?)")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class Where:
    """Where a definition came from (a file, else its name once known), for one-line error messages."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.name: str | None = None

    def error(self, field_name: str, reason: str, hint: str = HINT) -> UsageError:
        if self.path is not None:
            where = f"provider file {self.path}"
        elif self.name is not None:
            where = f"provider {self.name!r}"
        else:
            where = "provider definition"
        return UsageError(f"{where}: {field_name}: {reason}" if field_name else f"{where}: {reason}", hint)


def json_object(where: Where, value: object, field_name: str, allowed: Iterable[str]) -> dict[str, Any]:
    """``value`` as an object whose keys are all in ``allowed`` (keys starting with ``_`` are comments)."""
    if not isinstance(value, dict):
        raise where.error(field_name, f"must be a JSON object, not {type_name(value)}")
    known = frozenset(allowed)
    for key in value:
        if key not in known and not str(key).startswith("_"):
            path = f"{field_name}.{key}" if field_name else str(key)
            raise where.error(path, "unknown field", f"allowed fields: {', '.join(sorted(known))}")
    return cast(dict[str, Any], value)


def type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def get_str(where: Where, obj: Mapping[str, Any], key: str, *, prefix: str = "", required: bool = False) -> str | None:
    """A string field; None when absent or ``null`` (authsome writes explicit nulls)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise where.error(prefix + key, "is required")
        return None
    if not isinstance(value, str):
        raise where.error(prefix + key, f"must be a string, not {type_name(value)}")
    return value


def text(where: Where, obj: Mapping[str, Any], key: str, limit: int, *, prefix: str = "") -> str | None:
    """A free-text string field: at most ``limit`` characters, no control characters."""
    value = get_str(where, obj, key, prefix=prefix)
    if value is not None and (CONTROL_RE.search(value) or len(value) > limit):
        raise where.error(prefix + key, f"must be at most {limit} characters without control characters")
    return value


def choice(
    where: Where,
    obj: Mapping[str, Any],
    key: str,
    choices: tuple[str, ...],
    *,
    default: str | None,
    prefix: str = "",
    what: str = "",
) -> str:
    """One of ``choices``; ``default`` when absent (required when ``default`` is None)."""
    value = get_str(where, obj, key, prefix=prefix, required=default is None)
    if value is None:
        assert default is not None
        return default
    if value not in choices:
        allowed = " or ".join(repr(c) for c in choices)
        raise where.error(prefix + key, f"{value!r} is not valid{' for an ' + what if what else ''}; use {allowed}")
    return value


def env_name(where: Where, field_name: str, value: object) -> str:
    """A valid environment variable name."""
    if not isinstance(value, str) or not ENV_RE.fullmatch(value):
        raise where.error(field_name, f"{value!r} is not a valid environment variable name")
    return value


def check_url(where: Where, field_name: str, url: str) -> str:
    """An ``https://`` URL (``http://`` only for loopback hosts) without user info, fragment or templates."""
    m = URL_RE.fullmatch(url)
    if m is None or CONTROL_RE.search(url) or "{" in url or "}" in url:
        raise where.error(field_name, f"{url!r} is not a valid https:// URL")
    scheme, authority, _ = m.groups()
    try:
        host, _ = split_host_port(authority)
    except InvalidPort as exc:
        raise where.error(field_name, f"{url!r} has an invalid port: {exc}") from None
    except ValueError as exc:
        raise where.error(field_name, f"{url!r} has an invalid host: {exc}") from None
    if scheme == "http" and host not in LOOPBACK:
        raise where.error(field_name, f"{url!r} must use https:// (http:// only for 127.0.0.1, localhost or ::1)")
    return url


def url_parts(url: str) -> tuple[str, int, str]:
    """(canonical host, port, path without query) of a URL that :func:`check_url` accepted."""
    m = URL_RE.fullmatch(url)
    if m is None:  # pragma: no cover - URLs are validated at parse time
        raise ValueError(f"invalid URL {url!r}")
    scheme, authority, path = m.groups()
    host, port = split_host_port(authority, 443 if scheme == "https" else 80)
    return host, port, path.split("?", 1)[0]
