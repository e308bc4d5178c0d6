"""Host names and rules: canonical names, ``host:port`` text, ``host_url`` parsing and matching, ``regex:`` rules.

This module is on the proxy's hot path: it imports nothing outside the standard library, and the slow parts
(IDNA for non-ASCII names, :mod:`ipaddress` for IPv6 literals, RE2 for ``regex:`` rules) are imported only when a
host or rule needs them. :func:`split_host_port` is authsome's parser of ``host:port`` text.

``host_url`` forms::

    api.x.com                 exact host, port 443, any path
    api.x.com:8443            exact host and port
    https://api.x.com/v1      exact host (port 443 unless given), path prefix /v1 (segment boundary)
    regex:<pattern>           full match of the canonical host name, port 443

A ``regex:`` rule is matched with RE2 (:mod:`authsome.providers.linear_regex`), in time linear in the host name, so
no pattern can stall the proxy. :func:`check_host_pattern` checks what a pattern may claim: only names under one
registrable domain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from authsome.providers.linear_regex import LinearPattern, compile_linear

MAX_HOST_LENGTH = 253

MAX_PATTERN_LENGTH = 256
DEFAULT_PORT = 443
Fail = Callable[[str], ValueError]

_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*")
_SPACE_OR_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")
_DOT_SEGMENT_RE = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|%2e|%2f|%5c|\\", re.IGNORECASE)

# Suffixes under which anyone can get a name: a regex suffix must be longer than these.
PUBLIC_SUFFIXES = frozenset(
    {
        "co.uk", "org.uk", "ac.uk", "gov.uk", "com.au", "net.au", "org.au", "co.jp", "ne.jp", "co.nz", "co.in",
        "com.br", "com.cn", "com.mx", "co.za", "com.tr", "co.kr", "com.sg", "com.hk", "com.tw",
        "github.io", "gitlab.io", "herokuapp.com", "vercel.app", "netlify.app", "pages.dev", "workers.dev",
        "appspot.com", "web.app", "firebaseapp.com", "azurewebsites.net", "cloudfront.net", "amazonaws.com",
        "blogspot.com", "ngrok.io", "ngrok-free.app", "fly.dev", "onrender.com", "glitch.me", "repl.co",
        "s3.amazonaws.com", "trycloudflare.com", "duckdns.org", "no-ip.org",
    }
)  # fmt: skip


# -- canonical host names -----------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """The canonical form of a host name: lowercase, no trailing dot, IDNA (``xn--``) labels, IPv6 without ``[]``.

    Raises ``ValueError`` for an empty, malformed or over-long (> 253 characters) name.
    """
    if not host or len(host) > 4 * MAX_HOST_LENGTH:
        raise ValueError("empty host name" if not host else "host name is too long")
    if host.startswith("[") or ":" in host:
        return _canonical_ipv6(host)
    name = host[:-1] if host.endswith(".") else host
    if not name.isascii():
        name = _idna(name)
    name = name.lower()
    if len(name) > MAX_HOST_LENGTH:
        raise ValueError(f"host name is longer than {MAX_HOST_LENGTH} characters")
    for label in name.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"invalid host name {host!r}")
    return name


def _idna(name: str) -> str:
    import encodings.idna  # noqa: F401  (registers the codec; imported only for non-ASCII names)

    try:
        return name.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid internationalised host name {name!r}") from None


def _canonical_ipv6(host: str) -> str:
    import ipaddress

    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.IPv6Address(inner).compressed
    except ValueError:
        raise ValueError(f"invalid host name {host!r}") from None


# -- host:port ---------------------------------------------------------------------------------------------------


class InvalidPort(ValueError):
    """The port of ``host:port`` text is missing or not a number from 1 (or 0) to 65535."""


def split_host_port(text: str, default_port: int | None = DEFAULT_PORT, *, port_zero: bool = False) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (:func:`canonical_host`, port).

    IPv6 literals need their brackets. ``default_port`` applies when no port is written (None: a port is required); a
    port is 1 to 65535 (0 too with ``port_zero``). ``ValueError`` with a one-line reason otherwise.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed '[' in IPv6 address")
        host, tail = text[: end + 1], text[end + 1 :]
        if tail and not tail.startswith(":"):
            raise ValueError("unexpected text after the IPv6 address")
        port = tail[1:] if tail else None
    elif ":" in text:
        if text.count(":") > 1:  # "::1:443": is 443 a port? Brackets say.
            raise ValueError("an IPv6 address must be written in brackets, e.g. [::1]:443")
        host, port = text.split(":")
    else:
        host, port = text, None
    name = canonical_host(host)
    if port is None:
        if default_port is None:
            raise InvalidPort("a port is required (host:port)")
        return name, default_port
    lowest = 0 if port_zero else 1
    if not (port.isascii() and port.isdigit() and len(port) <= 5) or not lowest <= int(port) <= 65535:
        raise InvalidPort(f"port must be a number from {lowest} to 65535")
    return name, int(port)


# -- rules --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostRule:
    """One parsed ``host_url`` entry: an exact host (with port and optional path prefix) or a host regex."""

    raw: str
    kind: Literal["exact", "regex"]
    host: str | None
    port: int
    path_prefix: str
    pattern: LinearPattern | None = field(default=None, compare=False)  # follows from ``raw``

    def matches(self, host: str, port: int, path: str) -> bool:
        """Whether a request to canonical ``host``:``port`` for ``path`` falls under this rule."""
        if port != self.port:
            return False
        if self.kind == "exact":
            if host != self.host:
                return False
        elif self.pattern is None or len(host) > MAX_HOST_LENGTH or self.pattern.fullmatch(host) is None:
            return False
        return not self.path_prefix or path_under(path, self.path_prefix)

    @property
    def rank(self) -> tuple[int, int]:
        """Specificity: exact beats regex, then a longer path prefix beats a shorter one."""
        return (1 if self.kind == "exact" else 0, len(self.path_prefix))

    def __str__(self) -> str:
        return self.raw


def path_under(path: str, prefix: str) -> bool:
    """Whether ``path`` (query allowed) is ``prefix`` or below it on a segment boundary; dot segments never match."""
    for sep in "?#":
        path = path.split(sep, 1)[0]
    if _DOT_SEGMENT_RE.search(path):
        return False
    return path == prefix or path.startswith(prefix + "/")


def parse_host_rule(text: str) -> HostRule:
    """Parse one ``host_url`` entry; ``ValueError`` with a one-line reason when it is not acceptable."""
    if not isinstance(text, str) or not text:
        raise ValueError("host rule must be a non-empty string")
    if _SPACE_OR_CONTROL_RE.search(text):
        raise ValueError("host rule contains whitespace or control characters")
    if text.startswith("regex:"):
        pattern = text[len("regex:") :]
        return HostRule(text, "regex", None, DEFAULT_PORT, "", compile_host_pattern(pattern))
    rest, path = text, ""
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme.lower() != "https":
            raise ValueError(f"host rule {text!r}: only https:// URLs are accepted (plain HTTP never gets credentials)")
        if "/" in rest:
            rest, path = rest.split("/", 1)
            path = "/" + path
    elif "/" in text:
        raise ValueError(f"host rule {text!r}: a path needs the URL form https://host/path")
    if any(c in text for c in "?#@"):
        raise ValueError(f"host rule {text!r}: no user info, query or fragment allowed")
    if "*" in rest:
        raise ValueError(f"host rule {text!r}: wildcards are not supported; use regex:<pattern>")
    try:
        host, port = split_host_port(rest, DEFAULT_PORT)
    except ValueError as exc:
        raise ValueError(f"host rule {text!r}: {exc}") from None
    path = path.rstrip("/")
    if path and (not _PATH_RE.fullmatch(path) or _DOT_SEGMENT_RE.search(path) or "//" in path):
        raise ValueError(f"host rule {text!r}: invalid path prefix {path!r}")
    return HostRule(text, "exact", host, port, path, None)


# -- regex rules ----------------------------------------------------------------------------------------------------


def compile_host_pattern(pattern: str) -> LinearPattern:
    """``pattern`` checked with :func:`check_host_pattern` and compiled with RE2 (matched with ``fullmatch``)."""
    fail = _failure(pattern)
    if not pattern:
        raise fail("empty pattern")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise fail(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    if not pattern.isascii():
        raise fail("use the IDNA (xn--) form of non-ASCII names")
    try:
        compiled = compile_linear(pattern)
    except ValueError as exc:
        raise fail(str(exc)) from None
    _check_scope(pattern, fail)
    return compiled


def check_host_pattern(pattern: str) -> None:
    """Raise ``ValueError`` (naming the pattern and the reason) unless ``pattern`` may be a ``regex:`` rule.

    It must compile with RE2 and may only claim names under one registrable domain: it ends in a fixed suffix of at
    least two whole DNS labels that is not a public suffix (``\\.googleapis\\.com``), has no ``|`` outside a group,
    no ``.`` wildcard (write ``\\.`` for a dot) and no uppercase letters (host names are matched in lowercase).
    Any shape before that suffix is fine: RE2 matches in linear time.
    """
    compile_host_pattern(pattern)


def narrow_host_pattern(pattern: str) -> str | None:
    """A safe pattern for a broad ``.*<rest>`` / ``.+<rest>`` one (authsome's files use them), or None.

    The result matches a subset of what ``pattern`` matches: the leading wildcard becomes whole labels,
    ``([a-z0-9-]+\\.)*`` (``+`` when the wildcard must match something or ``rest`` starts with ``\\.``). So
    ``.*githubusercontent\\.com$`` becomes ``([a-z0-9-]+\\.)*githubusercontent\\.com`` and can no longer match
    ``evilgithubusercontent.com``. None when ``pattern`` has another shape or the result is still not safe
    (``.*googleapis.*`` names no domain at all).
    """
    core = pattern[1:] if pattern.startswith("^") else pattern
    if core.endswith("$") and not core.endswith("\\$"):
        core = core[:-1]
    lead, rest = core[:2], core[2:]
    if lead not in (".*", ".+") or not rest:
        return None
    if rest.startswith("\\."):
        candidate = "([a-z0-9-]+\\.)+" + rest[2:]
    else:
        candidate = "([a-z0-9-]+\\.)" + ("+" if lead == ".+" else "*") + rest
    try:
        check_host_pattern(candidate)
    except ValueError:
        return None
    return candidate


def _failure(pattern: str) -> Fail:
    return lambda reason: ValueError(f"regex {pattern!r}: {reason}")


def _check_scope(pattern: str, fail: Fail) -> None:
    """What ``pattern`` may claim, read from the parse tree of Python's :mod:`re` (which has no public API for it).

    The tree is only read, never matched. A pattern RE2 accepts and Python's parser refuses (``\\p{L}``, ``\\z``)
    or warns about (``[[:alpha:]]``) is refused; what is read (literal characters, anchors, groups, repeats,
    alternation) both engines read alike, and where they differ (``a{,2}`` is literal text to RE2) RE2 matches less.
    """
    import importlib
    import warnings

    parser = importlib.import_module("re._parser")
    ops = importlib.import_module("re._constants")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "possible nested set": the engines read [[:x:]] differently
            items = list(parser.parse(pattern))
    except (re.error, Warning) as exc:
        raise fail(str(exc)) from None
    _check_atoms(items, ops, fail)
    if any(op is ops.BRANCH for op, _ in items):
        raise fail("alternation is only allowed inside a group, e.g. (eu|us)\\.acme\\.com")
    while items and items[-1][0] is ops.AT:  # '$'
        items.pop()
    suffix = ""
    while items and items[-1][0] is ops.LITERAL:
        suffix = chr(items.pop()[1]) + suffix
    labels = suffix.split(".")
    if not _at_label_start(items, True, ops) or suffix.startswith("."):
        labels = labels[1:]  # the first fragment may be glued to the variable part before it
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise fail("the pattern must end in a fixed suffix of at least two whole labels, e.g. '\\.googleapis\\.com'")
    if ".".join(labels) in PUBLIC_SUFFIXES:
        raise fail(f"suffix {'.'.join(labels)!r} is a public suffix that anyone can register under")


def _check_atoms(items: Any, ops: Any, fail: Fail) -> None:
    """No '.' wildcard and no uppercase letter anywhere in the tree."""
    for op, av in items:
        if op is ops.ANY:
            raise fail("'.' matches any character (and so any domain); write '\\.' for a literal dot")
        if (op is ops.LITERAL and 65 <= av <= 90) or (op is ops.RANGE and (65 <= av[0] <= 90 or 65 <= av[1] <= 90)):
            raise fail("host names are matched in lowercase; use lowercase letters")
        for sub in _children(op, av, ops):
            _check_atoms(sub, ops, fail)


def _children(op: Any, av: Any, ops: Any) -> list[Any]:
    if op is ops.IN:
        return [av]
    if op is ops.SUBPATTERN:
        return [av[-1]]
    if op in (ops.MAX_REPEAT, ops.MIN_REPEAT, getattr(ops, "POSSESSIVE_REPEAT", None)):
        return [av[2]]
    if op is ops.BRANCH:
        return list(av[1])
    if op is getattr(ops, "ATOMIC_GROUP", None):
        return [av]
    return []


def _at_label_start(items: Any, state: bool, ops: Any) -> bool:
    """Whether every match of ``items`` (entered at a label start when ``state``) ends at a label start: it is empty
    at the start of the host or ends in a literal dot. Anything not known to end so counts as not ending so."""
    for op, av in items:
        if op is ops.LITERAL:
            state = av == ord(".")
        elif op is ops.AT:
            continue  # '^', '$' consume nothing
        elif op is ops.SUBPATTERN:
            state = _at_label_start(av[-1], state, ops)
        elif op is getattr(ops, "ATOMIC_GROUP", None):
            state = _at_label_start(av, state, ops)
        elif op in (ops.MAX_REPEAT, ops.MIN_REPEAT, getattr(ops, "POSSESSIVE_REPEAT", None)):
            low, high, sub = av
            once = _at_label_start(sub, state, ops)
            twice = _at_label_start(sub, once, ops)  # further repeats only alternate between these two
            state = (low > 0 or state) and (high < 1 or once) and (high < 2 or twice)
        elif op is ops.BRANCH:
            state = all(_at_label_start(branch, state, ops) for branch in av[1])
        else:
            state = False
    return state
