"""Least-privilege rules for ``authsome run``: which methods and paths each provider may be called with.

A rule reads ``PROVIDER[/CONNECTION]:METHODS PATH-GLOB``, e.g. ``github:GET /repos/**`` or
``openai:POST,GET /v1/chat/**``; METHODS is ``*`` or a comma list; in the glob ``*`` stays within one path segment
and ``**`` spans segments (``/a/**`` also matches ``/a``). A policy file (TOML or JSON) holds the same rules::

    allow = ["github:GET /repos/**"]            # strings, and/or tables:
    [[rule]]
    provider = "openai"
    methods = ["POST"]
    paths = ["/v1/chat/**"]

With no rules nothing is restricted. With rules, a request to a provider is allowed only when one of that
provider's rules matches it: providers without rules get nothing (deny by default). Paths with dot segments or
encoded slashes/dots are refused while a policy is active, so a rule cannot be walked around; neither can a
method-override header (``X-HTTP-Method-Override``, ``X-HTTP-Method``, ``X-Method-Override``), which many servers
obey: every method it names must be allowed too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsome.errors import UsageError

_RULE_RE = re.compile(
    r"^(?P<provider>[a-z0-9][a-z0-9_-]*)(?:/(?P<connection>[a-z0-9][a-z0-9_-]*))?:"
    r"(?P<methods>\*|[A-Za-z]+(?:,[A-Za-z]+)*)\s+(?P<path>/\S*)$"
)
_SNEAKY = re.compile(r"(^|/)\.\.?(/|$)|%2[eEfF]|%5[cC]|\\")
_METHOD = re.compile(r"[A-Za-z]+")
METHOD_OVERRIDE_HEADERS = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


@dataclass(frozen=True)
class Rule:
    """One allow rule."""

    provider: str
    connection: str | None
    methods: frozenset[str] | None  # None = any method
    path_glob: str
    pattern: re.Pattern[str]

    def __str__(self) -> str:
        methods = "*" if self.methods is None else ",".join(sorted(self.methods))
        who = self.provider + (f"/{self.connection}" if self.connection else "")
        return f"{who}:{methods} {self.path_glob}"

    def matches(self, provider: str, connection: str, method: str, path: str) -> bool:
        return (
            provider == self.provider
            and (self.connection is None or connection == self.connection)
            and (self.methods is None or method.upper() in self.methods)
            and self.pattern.fullmatch(path) is not None
        )


@dataclass(frozen=True)
class Decision:
    """Whether a request may go upstream, and the rule (or reason) that decided."""

    allowed: bool
    reason: str


@dataclass(frozen=True)
class Policy:
    """A set of allow rules; empty means unrestricted."""

    rules: tuple[Rule, ...] = ()
    source: str = "--allow"

    def check(self, provider: str, connection: str, method: str, path: str, overrides: Sequence[str] = ()) -> Decision:
        """Decide one request; ``path`` is the request path without its query string, ``overrides`` the values of
        its :data:`METHOD_OVERRIDE_HEADERS` (each method they name is judged as well as ``method``)."""
        if not self.rules:
            return Decision(True, "no policy")
        path = path.split("?", 1)[0] or "/"
        if _SNEAKY.search(path):
            return Decision(False, "path has dot segments or encoded separators")
        if not any(r.provider == provider for r in self.rules):
            return Decision(False, f"no rule allows provider {provider}")
        named = [m.strip() for value in overrides for m in value.split(",") if m.strip()]
        bad = next((m for m in named if not _METHOD.fullmatch(m)), None)
        if bad is not None:
            return Decision(False, f"a method-override header names {bad[:40]!r}, which is not a method")
        method = method.upper()
        allowed_by: list[Rule] = []
        for wanted in dict.fromkeys([method, *(m.upper() for m in named)]):
            rule = next((r for r in self.rules if r.matches(provider, connection, wanted, path)), None)
            if rule is None:
                via = "" if wanted == method else f" (asked for by a method-override header on {method})"
                return Decision(False, f"no rule allows {wanted} {path}{via}")
            allowed_by.append(rule)
        return Decision(True, f"allowed by {allowed_by[0]}")


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """Compile a path glob: ``*`` within a segment, ``**`` across segments."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("(?:/.*)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def parse_rule(text: str) -> Rule:
    """Parse ``PROVIDER[/CONNECTION]:METHODS PATH-GLOB``; :class:`UsageError` naming the rule when malformed."""
    m = _RULE_RE.match(text.strip())
    if not m:
        raise UsageError(f"allow rule {text!r} is malformed", "write PROVIDER[/CONNECTION]:METHOD[,METHOD] /path/glob")
    methods = None if m["methods"] == "*" else frozenset(x.upper() for x in m["methods"].split(","))
    return Rule(m["provider"], m["connection"], methods, m["path"], glob_to_regex(m["path"]))


def _rules_from_table(entry: dict[str, Any], where: str) -> Iterable[Rule]:
    unknown = set(entry) - {"provider", "connection", "methods", "paths"}
    if unknown or not isinstance(entry.get("provider"), str) or not isinstance(entry.get("paths"), list):
        raise UsageError(
            f"{where}: a rule needs provider and paths (and optional connection, methods)",
            f"unexpected or missing fields: {sorted(unknown) or 'provider/paths'}",
        )
    methods = entry.get("methods") or ["*"]
    who = entry["provider"] + (f"/{entry['connection']}" if entry.get("connection") else "")
    for path in entry["paths"]:
        yield parse_rule(f"{who}:{','.join(methods) if methods != ['*'] else '*'} {path}")


_ALLOW_EXAMPLE = 'e.g. allow = ["github:GET /repos/**"]'
_RULE_EXAMPLE = 'e.g. [[rule]] provider = "github", methods = ["GET"], paths = ["/repos/**"]'


def load_policy_file(path: Path) -> list[Rule]:
    """Rules from a TOML (``.toml``) or JSON file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read policy file {path}: {exc.strerror}", "check the path") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"policy file {path} does not parse: {exc}", "fix the syntax (TOML or JSON)") from None
    if not isinstance(data, dict) or set(data) - {"allow", "rule"}:
        raise UsageError(f"policy file {path} must hold `allow` (strings) and/or `rule` (tables)", _ALLOW_EXAMPLE)
    rules = [parse_rule(r) for r in data.get("allow", []) if isinstance(r, str) or _bad(path, r)]
    for entry in data.get("rule", []):
        if not isinstance(entry, dict):
            raise UsageError(f"{path}: every [[rule]] must be a table", _RULE_EXAMPLE)
        rules.extend(_rules_from_table(entry, str(path)))
    return rules


def _bad(path: Path, value: object) -> bool:
    raise UsageError(f"{path}: allow entries must be strings, found {type(value).__name__}", _ALLOW_EXAMPLE)


def build_policy(allow: Sequence[str] = (), policy_file: Path | None = None) -> Policy:
    """The run's policy from ``--allow`` rules and an optional ``--policy`` file."""
    rules = [parse_rule(r) for r in allow]
    if policy_file is not None:
        rules.extend(load_policy_file(policy_file))
    source = ", ".join(filter(None, ["--allow" if allow else "", str(policy_file) if policy_file else ""]))
    return Policy(tuple(rules), source or "none")
