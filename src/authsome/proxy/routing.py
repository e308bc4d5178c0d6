"""Which provider's credential, if any, a request gets: ``Router.route(scheme, host, port, path)``.

Pure and fast: no mitmproxy, no I/O. The router is built once, before the child starts, from the routes the api layer
hands over; each request is then a dictionary lookup plus (for ``regex:`` rules) one bounded ``fullmatch`` per rule.

Rules, in order:

1. Plain HTTP never gets a credential.
2. A request to one of an in-play provider's own OAuth endpoints (token, authorization, …) never gets one.
3. Among the rules that match (canonical host, port, path prefix), the most specific wins: exact host beats regex,
   then the longest path prefix. Two providers tied at the best rank are ambiguous: nobody gets injected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from authsome.errors import UsageError
from authsome.models import DEFAULT_CONNECTION
from authsome.providers.hosts import HostRule, canonical_host
from authsome.providers.schema import Provider

_INTERCEPT_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Route:
    """One provider the proxy may inject, and which of its stored connections to use."""

    provider: Provider
    connection: str = DEFAULT_CONNECTION


@dataclass(frozen=True)
class Match:
    """Inject ``provider``'s credential from ``connection``; ``rule`` is the host rule that won."""

    provider: str
    connection: str
    rule: str


@dataclass(frozen=True)
class Ambiguous:
    """Two or more providers claim the request with the same specificity: forward it unchanged."""

    host: str
    providers: tuple[str, ...]

    @property
    def message(self) -> str:
        """The line logged (once per host) when this happens."""
        return f"ambiguous host match: {self.host} claimed by {', '.join(self.providers)}"


@dataclass(frozen=True)
class NoMatch:
    """No credential for this request; ``reason`` is a short tag (``no-route``, ``plain-http``, ``oauth-endpoint``…)."""

    reason: str


Decision = Match | Ambiguous | NoMatch


class Router:
    """Routes requests to providers. Raises :class:`UsageError` for a route list that cannot work."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        seen: set[str] = set()
        self._exact: dict[tuple[str, int], list[tuple[HostRule, Route]]] = {}
        self._regex: list[tuple[HostRule, Route]] = []
        self._oauth: dict[str, list[Provider]] = {}
        for route in self.routes:
            name = route.provider.name
            if name in seen:
                raise UsageError(
                    f"provider {name} is routed twice",
                    "pick one connection per provider with --connection PROVIDER=NAME",
                )
            seen.add(name)
            for rule in route.provider.host_rules:
                if rule.kind == "exact" and rule.host is not None:
                    self._exact.setdefault((rule.host, rule.port), []).append((rule, route))
                else:
                    self._regex.append((rule, route))
            for host in route.provider.oauth_hosts:
                self._oauth.setdefault(host, []).append(route.provider)
        self._intercepts: dict[tuple[str, int], bool] = {}

    @property
    def providers(self) -> tuple[str, ...]:
        """Names of the routed providers, in route order."""
        return tuple(r.provider.name for r in self.routes)

    def unroutable(self) -> tuple[str, ...]:
        """Providers that have no host rule, so the proxy can never inject them."""
        return tuple(r.provider.name for r in self.routes if not r.provider.host_rules)

    def intercepts(self, host: str, port: int) -> bool:
        """Whether some rule could match ``host``:``port`` (on some path), i.e. whether TLS must be intercepted."""
        try:
            key = (canonical_host(host), port)
        except ValueError:
            return False
        cached = self._intercepts.get(key)
        if cached is not None:
            return cached
        found = key in self._exact or any(
            rule.matches(key[0], port, rule.path_prefix or "/") for rule, _ in self._regex
        )
        if len(self._intercepts) >= _INTERCEPT_CACHE_SIZE:
            self._intercepts.clear()
        self._intercepts[key] = found
        return found

    def route(self, scheme: str, host: str, port: int, path: str) -> Decision:
        """Decide for one request. ``host`` may be in any case or carry a trailing dot; ``path`` may carry a query."""
        if scheme != "https":
            return NoMatch("plain-http")
        try:
            host = canonical_host(host)
        except ValueError:
            return NoMatch("bad-host")
        if any(p.is_oauth_endpoint(host, port, path) for p in self._oauth.get(host, ())):
            return NoMatch("oauth-endpoint")
        best: tuple[int, int] | None = None
        winners: dict[str, tuple[HostRule, Route]] = {}
        for rule, route in self._candidates(host, port):
            if not rule.matches(host, port, path):
                continue
            rank = rule.rank
            if best is None or rank > best:
                best, winners = rank, {route.provider.name: (rule, route)}
            elif rank == best:
                winners.setdefault(route.provider.name, (rule, route))
        if not winners:
            return NoMatch("no-route")
        if len(winners) > 1:
            return Ambiguous(host, tuple(sorted(winners)))
        rule, route = next(iter(winners.values()))
        return Match(route.provider.name, route.connection, rule.raw)

    def _candidates(self, host: str, port: int) -> Sequence[tuple[HostRule, Route]]:
        exact = self._exact.get((host, port))
        if not self._regex:
            return exact or ()
        return [*(exact or ()), *self._regex]
