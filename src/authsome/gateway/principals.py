"""Agents at the proxy door: ``Proxy-Authorization: Basic <NAME:TOKEN>`` → the agent's :class:`Principal`, or a refusal.

Each answer is reused for at most ``ttl`` (1 s): the agent's record is read again after that, so a revocation, a
rotation or an expiry reaches the next request within a second. The agent's rights (its routes, allow rules and
connections) are rebuilt when its record changes, and every ``rights_ttl`` seconds besides (a provider logged in
since then becomes usable by an agent that may use every connected provider).

Wrong credentials count against the source address (:class:`~authsome.proxy.auth.FailureLimiter`); a name that has
no agent and a wrong token get the same answer in the same time, so names cannot be probed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from authsome.errors import AuthsomeError
from authsome.gateway.runs import PREFIX as RUN_PREFIX
from authsome.policy import Policy, parse_rule
from authsome.proxy.auth import Denied, FailureLimiter, Principal, Verdict, parse_basic
from authsome.proxy.routing import Route, Router
from authsome.store.agents import Agent, verify_unknown

Lookup = Callable[[str], Agent | None]
RoutesFor = Callable[[Sequence[str], Mapping[str, str]], list[Route]]
OnDenied = Callable[[str | None, str | None, Denied], None]
TTL = 1.0
RIGHTS_TTL = 10.0
MAX_CACHED = 4096
NO_CREDENTIALS = "proxy credentials required: use http://AGENT:TOKEN@HOST:PORT as the proxy URL"
WRONG = "unknown agent or wrong token"
RUN_ELSEWHERE = "a run's agent is served to processes on the gateway's own host only"


def principal_for(agent: Agent, routes: Sequence[Route]) -> Principal:
    """The agent's rights as the proxy applies them: its routes, allow rules and the connections it may pick; never
    the gateway host's own loopback or link-local addresses.

    The agent of an ``authsome run`` (``run.<hex>``, made over the control socket by a process of this user on this
    host) has a run's rights instead: any stored connection, and this host's own addresses, as its own proxy gives.
    """
    rights = agent.rights
    rules = tuple(parse_rule(rule) for rule in rights.allow)
    policy = Policy(rules, rights.policy_source or f"agent {agent.name}")
    if agent.name.startswith(RUN_PREFIX):
        return Principal(agent.name, Router(routes), policy, None, host_local=True)
    connections = {
        route.provider.name: frozenset(rights.connections.get(route.provider.name) or (route.connection,))
        for route in routes
    }
    return Principal(agent.name, Router(routes), policy, connections, host_local=False)


class AgentAuthenticator:
    """The gateway's :class:`~authsome.proxy.auth.Authenticator`: agents, their tokens and their rights."""

    def __init__(
        self,
        lookup: Lookup,
        routes_for: RoutesFor,
        *,
        limiter: FailureLimiter | None = None,
        on_denied: OnDenied | None = None,
        ttl: float = TTL,
        rights_ttl: float = RIGHTS_TTL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.lookup = lookup
        self.routes_for = routes_for
        self.limiter = limiter or FailureLimiter(clock=clock)
        self.on_denied = on_denied
        self.ttl = ttl
        self.rights_ttl = rights_ttl
        self.clock = clock
        self.wall = wall
        self._answers: dict[bytes, tuple[float, Principal]] = {}  # sha256(header) -> (when, principal)
        self._rights: dict[str, tuple[float, float, Principal]] = {}  # agent -> (when, record version, principal)
        self._lock = threading.Lock()  # forget() comes from other threads (the control socket, a worker's channel)
        self._forgotten = 0  # how many forget() calls so far: an answer checked across one is not cached

    def authenticate(self, header: str, peer: str | None) -> Verdict:
        verdict = self._authenticate(header, peer)
        if isinstance(verdict, Principal) and verdict.name and verdict.name.startswith(RUN_PREFIX) and not _local(peer):
            # a run's child is on this host: its token, leaked to another machine, opens nothing there
            return self._deny(peer, verdict.name, Denied(407, RUN_ELSEWHERE))
        return verdict

    def _authenticate(self, header: str, peer: str | None) -> Verdict:
        now = self.clock()
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
            self._answers.pop(key, None)
            forgotten = self._forgotten
        wait = self.limiter.blocked(peer)
        if wait is not None:
            return self._deny(
                peer, None, Denied(429, f"too many wrong proxy credentials from {peer}", "rate_limited", wait)
            )
        verdict = self._check(header, peer, now)
        if isinstance(verdict, Principal):
            with self._lock:
                if forgotten == self._forgotten:  # no agent was dropped meanwhile (it might be this one)
                    if len(self._answers) >= MAX_CACHED:
                        self._answers.clear()
                    self._answers[key] = (now, verdict)
        return verdict

    def forget(self, name: str) -> None:
        """Drop what is cached of agent ``name``: its next request is checked afresh (a run's agent that ended).
        Safe from any thread; an answer being checked meanwhile is returned but not cached."""
        with self._lock:
            self._forgotten += 1
            self._answers = {k: v for k, v in self._answers.items() if v[1].name != name}
            self._rights.pop(name, None)

    def _check(self, header: str, peer: str | None, now: float) -> Verdict:
        if not header:
            return self._deny(peer, None, Denied(407, NO_CREDENTIALS))
        credentials = parse_basic(header)
        if credentials is None:
            self.limiter.failed(peer)
            return self._deny(peer, None, Denied(407, f"{WRONG} (send Basic credentials: AGENT:TOKEN)"))
        name, token = credentials
        try:
            agent = self.lookup(name)
        except AuthsomeError as exc:
            return self._deny(peer, name, Denied(503, f"the gateway cannot read its agents ({exc.message})", "store"))
        if agent is None:
            verify_unknown(token)
        if agent is None or not agent.verify(token):
            self.limiter.failed(peer)
            return self._deny(peer, None, Denied(407, WRONG))
        state = agent.state(self.wall())
        if state == "revoked":
            return self._deny(peer, name, Denied(407, f"agent {name} was revoked", "agent_revoked"))
        if state == "expired":
            assert agent.expires_at is not None
            when = datetime.fromtimestamp(agent.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return self._deny(peer, name, Denied(407, f"agent {name} expired at {when}", "agent_expired"))
        try:
            return self._principal(agent, now)
        except AuthsomeError as exc:
            return self._deny(peer, name, Denied(503, f"agent {name}'s rights cannot be used: {exc.message}", "rights"))

    def _principal(self, agent: Agent, now: float) -> Principal:
        held = self._rights.get(agent.name)
        if held is not None and held[1] == agent.updated_at and now - held[0] < self.rights_ttl:
            return held[2]
        rights = agent.rights
        defaults = {provider: names[0] for provider, names in rights.connections.items() if names}
        principal = principal_for(agent, self.routes_for(rights.providers, defaults))
        self._rights[agent.name] = (now, agent.updated_at, principal)
        return principal

    def _deny(self, peer: str | None, agent: str | None, denied: Denied) -> Denied:
        if self.on_denied is not None:
            self.on_denied(peer, agent, denied)
        return denied


def _local(peer: str | None) -> bool:
    """Whether ``peer`` (a client's address) is this host's loopback (an IPv4-mapped one too)."""
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)
