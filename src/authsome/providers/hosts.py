"""Host rules: canonical host names, ``host_url`` parsing and matching, and regex rules that are safe by construction.

This module is on the proxy's hot path: it imports nothing outside the standard library, and the slow parts
(IDNA for non-ASCII names, :mod:`ipaddress` for IPv6 literals) are imported only when a host needs them.

``host_url`` forms::

    api.x.com                 exact host, port 443, any path
    api.x.com:8443            exact host and port
    https://api.x.com/v1      exact host (port 443 unless given), path prefix /v1 (segment boundary)
    regex:<pattern>           full match of the canonical host name, port 443

A regex is accepted only from a small grammar (see :func:`check_host_pattern`) that cannot match an arbitrary
registrable domain and cannot backtrack catastrophically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
MAX_PATTERN_LENGTH = 256
DEFAULT_PORT = 443

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


# -- rules --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostRule:
    """One parsed ``host_url`` entry: an exact host (with port and optional path prefix) or a host regex."""

    raw: str
    kind: Literal["exact", "regex"]
    host: str | None
    port: int
    path_prefix: str
    pattern: re.Pattern[str] | None

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
    host, port = _split_host_port(rest, text)
    path = path.rstrip("/")
    if path and (not _PATH_RE.fullmatch(path) or _DOT_SEGMENT_RE.search(path) or "//" in path):
        raise ValueError(f"host rule {text!r}: invalid path prefix {path!r}")
    return HostRule(text, "exact", host, port, path, None)


def _split_host_port(rest: str, text: str) -> tuple[str, int]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"host rule {text!r}: unclosed '[' in IPv6 address")
        host_part, tail = rest[: end + 1], rest[end + 1 :]
        if tail and not tail.startswith(":"):
            raise ValueError(f"host rule {text!r}: unexpected text after the IPv6 address")
        port_part = tail[1:] if tail else None
    elif ":" in rest:
        host_part, port_part = rest.rsplit(":", 1)
    else:
        host_part, port_part = rest, None
    if "*" in host_part:
        raise ValueError(f"host rule {text!r}: wildcards are not supported; use regex:<pattern>")
    try:
        host = canonical_host(host_part)
    except ValueError as exc:
        raise ValueError(f"host rule {text!r}: {exc}") from None
    if port_part is None:
        return host, DEFAULT_PORT
    if not port_part.isdigit() or not 0 < int(port_part) < 65536:
        raise ValueError(f"host rule {text!r}: port must be a number from 1 to 65535")
    return host, int(port_part)


# -- safe host regexes ---------------------------------------------------------------------------------------------


def compile_host_pattern(pattern: str) -> re.Pattern[str]:
    """Check ``pattern`` with :func:`check_host_pattern` and compile it (matched with ``fullmatch``)."""
    check_host_pattern(pattern)
    try:
        return re.compile(pattern)
    except re.error as exc:  # pragma: no cover - the grammar only admits valid regexes
        raise ValueError(f"regex {pattern!r}: {exc}") from None


def check_host_pattern(pattern: str) -> None:
    """Raise ``ValueError`` unless ``pattern`` belongs to the safe host-regex grammar.

    Grammar (matched against canonical, lowercase host names with ``fullmatch``; ``^``/``$`` optional)::

        pattern  := ['^'] item* ['$']
        item     := atom [quant] | alt ['?'] | label_group quant?
        atom     := [a-z0-9_-] | '\\.' | '\\-' | '\\d' | class
        class    := '[' (char | char '-' char | '\\-' | '\\d')+ ']'     no '.', no negation
        alt      := '(' ['?:'] literal ('|' literal)+ ')'                 literals of [a-z0-9_-]
        label_group := '(' ['?:'] atom-with-quant* '\\.' ')'              repeats whole labels, no nesting
        quant    := '?' | '*' | '+' | '{n}' | '{m,n}' | '{m,}'            n <= 253, no lazy/possessive forms

    plus two whole-pattern rules: between two mandatory ``\\.`` there is at most one variable-length item (so no
    two quantifiers compete for the same characters), and the pattern ends in a fixed literal suffix of at least two
    complete DNS labels that is not a public suffix (so it names one registrable domain).
    """
    _PatternChecker(pattern).check()


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


class _Item:
    """One parsed element of a host pattern (a plain class: dataclass creation costs start-up time)."""

    __slots__ = ("kind", "text", "variable")

    def __init__(self, kind: Literal["lit", "class", "alt", "group"], text: str, variable: bool) -> None:
        self.kind = kind
        self.text = text  # the literal text for "lit" items ('.' for an escaped dot)
        self.variable = variable


class _PatternChecker:
    """A small recursive-descent parser for the safe host-regex grammar."""

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0

    def fail(self, reason: str) -> ValueError:
        return ValueError(f"regex {self.src!r}: {reason}")

    def peek(self, n: int = 1) -> str:
        return self.src[self.pos : self.pos + n]

    def check(self) -> None:
        src = self.src
        if not src:
            raise self.fail("empty pattern")
        if len(src) > MAX_PATTERN_LENGTH:
            raise self.fail(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
        if not src.isascii():
            raise self.fail("use the IDNA (xn--) form of non-ASCII names")
        if re.search(r"\\[1-9]|\(\?P=", src):
            raise self.fail("backreferences are not allowed")
        if re.search(r"\(\?<?[=!]", src):
            raise self.fail("lookarounds are not allowed")
        if self.peek() == "^":
            self.pos += 1
        end = len(src) - 1 if src.endswith("$") and not src.endswith("\\$") else len(src)
        items = self.sequence(end, in_group=False)
        if self.pos != end:  # pragma: no cover - sequence() consumes up to end or raises
            raise self.fail(f"unexpected {src[self.pos]!r}")
        self.check_segments(items)
        self.check_suffix(items)

    def sequence(self, end: int, *, in_group: bool) -> list[_Item]:
        items: list[_Item] = []
        while self.pos < end:
            c = self.peek()
            if c == ")" and in_group:
                break
            if c == "|":
                raise self.fail("alternation is only allowed inside a group of literals, e.g. (eu|us)")
            if c == "(":
                if in_group:
                    raise self.fail("nested groups are not allowed")
                items.append(self.group())
                continue
            item = self.atom()
            items.append(self.quantified(item))
        return items

    def atom(self) -> _Item:
        c = self.peek()
        if c == "\\":
            return self.escape()
        if c == "[":
            return self.char_class()
        if c == ".":
            raise self.fail("'.' matches any character (and so any domain); write '\\.' for a literal dot")
        if c in "^$":
            raise self.fail(f"{c!r} is only allowed at the very start ('^') or end ('$')")
        if c in "*+?{":
            raise self.fail(f"quantifier {c!r} has nothing to repeat")
        if "A" <= c <= "Z":
            raise self.fail("host names are matched in lowercase; use lowercase letters")
        if not (c.isalnum() or c in "-_"):
            raise self.fail(f"character {c!r} is not allowed in a host pattern")
        self.pos += 1
        return _Item("lit", c, False)

    def escape(self) -> _Item:
        nxt = self.src[self.pos + 1 : self.pos + 2]
        self.pos += 2
        if nxt in (".", "-"):
            return _Item("lit", nxt, False)
        if nxt == "d":
            return _Item("class", "\\d", False)
        if nxt.isdigit():
            raise self.fail("backreferences are not allowed")
        raise self.fail(f"escape '\\{nxt}' is not allowed (only \\. \\- \\d)")

    def char_class(self) -> _Item:
        self.pos += 1
        if self.peek() == "^":
            raise self.fail("negated character classes are not allowed (they match '.')")
        members = 0
        while True:
            c = self.peek()
            if not c:
                raise self.fail("unclosed '['")
            if c == "]" and members:
                self.pos += 1
                return _Item("class", "", False)
            if c == "\\":
                esc = self.src[self.pos + 1 : self.pos + 2]
                if esc not in ("-", "d"):
                    raise self.fail(f"escape '\\{esc}' is not allowed in a character class (only \\- \\d)")
                self.pos += 2
            elif c == ".":
                raise self.fail("character classes must not contain '.': a class may not cross a label boundary")
            elif c.isdigit() or ("a" <= c <= "z") or c in "-_":
                if self.peek(2)[1:] == "-" and self.src[self.pos + 2 : self.pos + 3] not in ("]", ""):
                    lo, hi = c, self.src[self.pos + 2]
                    if (
                        not (lo.isdigit() or "a" <= lo <= "z")
                        or not (hi.isdigit() or "a" <= hi <= "z")
                        or lo > hi
                        or lo.isdigit() != hi.isdigit()
                    ):
                        raise self.fail(f"bad range {lo}-{hi} in character class")
                    self.pos += 3
                else:
                    self.pos += 1
            elif "A" <= c <= "Z":
                raise self.fail("host names are matched in lowercase; use lowercase letters")
            else:
                raise self.fail(f"character {c!r} is not allowed in a character class")
            members += 1

    def group(self) -> _Item:
        start = self.pos
        self.pos += 1
        if self.peek() == "?":
            head = self.peek(3)
            if head[:2] == "?:":
                self.pos += 2
            elif head[:2] in ("?=", "?!") or head in ("?<=", "?<!"):
                raise self.fail("lookarounds are not allowed")
            else:
                raise self.fail("only plain (...) and (?:...) groups are allowed")
        if self._is_alternation():
            return self.alternation(start)
        body = self.sequence(len(self.src), in_group=True)
        if self.peek() != ")":
            raise self.fail("unclosed '('")
        self.pos += 1
        if not body or body[-1].kind != "lit" or body[-1].text != ".":
            raise self.fail(
                "a group must be an alternation of literals like (eu|us) or whole labels ending in '\\.', "
                "like ([a-z0-9-]+\\.); nested quantifiers such as (a+)+ are not allowed"
            )
        self.check_segments(body)
        item = _Item("group", self.src[start : self.pos], False)
        return self.quantified(item)

    def _is_alternation(self) -> bool:
        depth_end = self.src.find(")", self.pos)
        return depth_end >= 0 and "|" in self.src[self.pos : depth_end]

    def alternation(self, start: int) -> _Item:
        end = self.src.find(")", self.pos)
        for branch in self.src[self.pos : end].split("|"):
            if not branch or not all(c.isdigit() or "a" <= c <= "z" or c in "-_" for c in branch):
                raise self.fail(f"alternatives must be non-empty literals of [a-z0-9_-], not {branch!r}")
        self.pos = end + 1
        item = _Item("alt", self.src[start : self.pos], True)
        if self.peek() == "?":
            self.pos += 1
        elif self.peek() in ("*", "+", "{"):
            raise self.fail("an alternation group may only be made optional with '?'")
        return item

    def quantified(self, item: _Item) -> _Item:
        c = self.peek()
        if c not in ("?", "*", "+", "{"):
            return item
        if c == "{":
            close = self.src.find("}", self.pos)
            body = self.src[self.pos + 1 : close] if close > 0 else ""
            m = re.fullmatch(r"(\d{1,3})(?:(,)(\d{1,3})?)?", body)
            if m is None:
                raise self.fail("malformed {m,n} quantifier")
            lo, comma, hi = int(m.group(1)), m.group(2), m.group(3)
            if (hi is not None and int(hi) < lo) or lo > MAX_HOST_LENGTH or (hi and int(hi) > MAX_HOST_LENGTH):
                raise self.fail(f"quantifier {{{body}}} is out of range (0..{MAX_HOST_LENGTH}, m <= n)")
            variable = bool(comma) and (hi is None or int(hi) != lo)
            self.pos = close + 1
        else:
            lo, variable = 1, True
            self.pos += 1
        if self.peek() in ("?", "+"):
            raise self.fail("lazy and possessive quantifiers are not allowed")
        if self.peek() in ("*", "{"):
            raise self.fail("nested quantifiers are not allowed")
        if item.kind == "lit" and item.text == "." and variable:
            raise self.fail("'\\.' may not be repeated; repeat whole labels with a group like ([a-z0-9-]+\\.)*")
        text = "" if variable else item.text * lo
        return _Item(item.kind, text, variable or item.variable)

    def check_segments(self, items: list[_Item]) -> None:
        """At most one variable-length item between two mandatory literal dots."""
        count = 0
        for item in items:
            if item.kind == "lit" and item.text == ".":
                count = 0
                continue
            if item.variable:
                count += 1
                if count > 1:
                    raise self.fail(
                        "two variable-length parts in one label can backtrack; separate them with a literal '\\.'"
                    )

    def check_suffix(self, items: list[_Item]) -> None:
        """The pattern must end in a literal suffix of at least two whole labels that is not a public suffix."""
        suffix = ""
        whole = True  # True when the suffix starts at the start of the pattern or right after a label group
        for item in reversed(items):
            if item.kind != "lit" or item.variable or not item.text:
                whole = item.kind == "group"
                break
            suffix = item.text + suffix
        labels = suffix.split(".")
        if not whole:
            labels = labels[1:]  # the first fragment may be glued to the variable part before it
        if len(labels) < 2 or not all(labels):
            raise self.fail(
                "the pattern must end in a fixed suffix of at least two whole labels, e.g. '\\.googleapis\\.com'"
            )
        if ".".join(labels) in PUBLIC_SUFFIXES:
            raise self.fail(f"suffix {'.'.join(labels)!r} is a public suffix that anyone can register under")
