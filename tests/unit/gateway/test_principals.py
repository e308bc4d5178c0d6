"""The gateway's authenticator: tokens, the 1-second re-check, revocation, expiry, rights and the per-address limit."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tests.unit.proxy.conftest import make_provider

from authsome.errors import StoreUnavailable
from authsome.gateway.principals import NO_CREDENTIALS, WRONG, AgentAuthenticator
from authsome.proxy.auth import Denied, FailureLimiter, Principal
from authsome.proxy.routing import Route
from authsome.store.agents import Agent, Rights, token_hash

OPENAI = make_provider("openai", "api.openai.com")
GITHUB = make_provider("github", "api.github.com")
TOKEN = "asag_" + "a" * 43


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(name: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{token}".encode()).decode()


def agent(name: str = "alice", **changes: object) -> Agent:
    base = Agent(name, token_hash(TOKEN), Rights(providers=("openai",)), created_at=1.0, updated_at=1.0)
    return replace(base, **changes)  # type: ignore[arg-type]


class Agents:
    """A stand-in store: counts its reads."""

    def __init__(self, *agents: Agent) -> None:
        self.agents = {a.name: a for a in agents}
        self.reads = 0
        self.fail = False

    def __call__(self, name: str) -> Agent | None:
        self.reads += 1
        if self.fail:
            raise StoreUnavailable("the store is locked")
        return self.agents.get(name)


class Routes:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []

    def __call__(self, providers: Sequence[str], connections: Mapping[str, str]) -> list[Route]:
        self.calls.append((tuple(providers), dict(connections)))
        known = {"openai": OPENAI, "github": GITHUB}
        wanted = sorted({*providers, *connections}) or sorted(known)  # as Authsome._routes chooses
        return [Route(known[p], connections.get(p, "default")) for p in wanted]


def make(*agents: Agent) -> tuple[AgentAuthenticator, Agents, Routes, Clock, list[tuple[str | None, Denied]]]:
    store, routes, clock, denied = Agents(*agents), Routes(), Clock(), []
    auth = AgentAuthenticator(
        store,
        routes,
        limiter=FailureLimiter(burst=3, refill=10, clock=clock),
        on_denied=lambda peer, name, d: denied.append((name, d)),
        clock=clock,
        wall=lambda: 5000.0,
    )
    return auth, store, routes, clock, denied


def test_a_valid_token_opens_the_agents_rights_and_is_rechecked_after_a_second() -> None:
    auth, store, routes, clock, _ = make(agent())
    who = auth.authenticate(basic("alice", TOKEN), "10.0.0.2")
    assert isinstance(who, Principal) and who.name == "alice"
    assert who.router.providers == ("openai",) and who.router.intercepts("api.openai.com", 443)
    assert not who.router.intercepts("api.github.com", 443)
    assert who.may_use("openai", "default") and not who.may_use("openai", "work") and not who.may_use("github", "x")
    clock.now += 0.9
    assert auth.authenticate(basic("alice", TOKEN), "10.0.0.2") is who and store.reads == 1  # cached
    clock.now += 0.2
    assert auth.authenticate(basic("alice", TOKEN), "10.0.0.2") is who and store.reads == 2  # read again
    assert len(routes.calls) == 1  # same record: same rights


def test_revocation_rotation_and_expiry_reach_the_next_check() -> None:
    auth, store, _, clock, denied = make(agent())
    assert isinstance(auth.authenticate(basic("alice", TOKEN), None), Principal)
    store.agents["alice"] = agent(revoked_at=4000.0, updated_at=2.0)
    clock.now += 1.0
    refused = auth.authenticate(basic("alice", TOKEN), None)
    assert refused == Denied(407, "agent alice was revoked", "agent_revoked")
    store.agents["alice"] = agent(token_hash=token_hash("new"), updated_at=3.0)
    assert auth.authenticate(basic("alice", TOKEN), None) == Denied(407, WRONG)
    assert isinstance(auth.authenticate(basic("alice", "new"), None), Principal)
    store.agents["alice"] = agent(expires_at=4999.0, updated_at=4.0)
    clock.now += 1.0
    assert auth.authenticate(basic("alice", TOKEN), None) == Denied(
        407, "agent alice expired at 1970-01-01T01:23:19Z", "agent_expired"
    )
    assert [name for name, _ in denied] == ["alice", None, "alice"]


def test_unknown_names_and_wrong_tokens_look_the_same() -> None:
    auth, _, _, _, _ = make(agent())
    assert auth.authenticate(basic("nobody", TOKEN), None) == auth.authenticate(basic("alice", "x"), None)
    assert auth.authenticate("", None) == Denied(407, NO_CREDENTIALS)
    assert auth.authenticate("Bearer " + TOKEN, None).status == 407  # type: ignore[union-attr]


def test_wrong_credentials_lock_out_the_address_only() -> None:
    auth, _, _, clock, _ = make(agent())
    for _ in range(3):
        assert auth.authenticate(basic("alice", "guess"), "10.0.0.9") == Denied(407, WRONG)
    locked = auth.authenticate(basic("alice", TOKEN), "10.0.0.9")  # the right token is not even looked at
    assert isinstance(locked, Denied) and locked.status == 429 and locked.retry_after == 10
    assert isinstance(auth.authenticate(basic("alice", TOKEN), "10.0.0.10"), Principal)
    assert auth.authenticate("", "10.0.0.11") == Denied(407, NO_CREDENTIALS)  # no credentials: not a guess
    clock.now += 10
    assert isinstance(auth.authenticate(basic("alice", TOKEN), "10.0.0.9"), Principal)  # one more try refilled


def test_rights_follow_the_record_and_name_its_connections() -> None:
    rights = Rights(providers=("github",), connections={"openai": ("work", "default")}, allow=("github:GET /user",))
    auth, store, routes, clock, _ = make(agent(rights=rights))
    who = auth.authenticate(basic("alice", TOKEN), None)
    assert isinstance(who, Principal)
    assert routes.calls == [(("github",), {"openai": "work"})]
    assert who.may_use("openai", "default") and who.may_use("openai", "work") and who.may_use("github", "default")
    assert who.policy.check("github", "default", "GET", "/user").allowed
    assert not who.policy.check("github", "default", "POST", "/user").allowed
    store.agents["alice"] = agent(updated_at=9.0)
    clock.now += 1.0
    again = auth.authenticate(basic("alice", TOKEN), None)
    assert isinstance(again, Principal) and again is not who and again.router.providers == ("openai",)
    assert not again.may_use("openai", "work")


def test_a_store_that_cannot_be_read_refuses_with_503() -> None:
    auth, store, _, _, _ = make(agent())
    store.fail = True
    refused = auth.authenticate(basic("alice", TOKEN), None)
    assert isinstance(refused, Denied) and refused.status == 503 and "the store is locked" in refused.reason


def test_limiter_forgets_full_buckets_first() -> None:
    clock = Clock()
    limiter = FailureLimiter(burst=2, refill=1, max_addresses=2, clock=clock)
    limiter.failed("a")
    clock.now += 5  # a's bucket is full again
    limiter.failed("b")
    limiter.failed("c")
    assert limiter.blocked("b") is None and "a" not in limiter._buckets
    started = time.monotonic()
    assert limiter.blocked(None) is None and time.monotonic() - started < 1


def test_limiter_tells_of_its_own_failures_and_counts_those_it_hears_of() -> None:
    clock = Clock()
    told: list[str] = []
    limiter = FailureLimiter(burst=2, refill=10, clock=clock)
    limiter.on_failed = told.append
    limiter.failed("10.0.0.1")
    limiter.failed(None)  # (no address: nothing to count or tell)
    assert told == ["10.0.0.1"] and limiter.blocked("10.0.0.1") is None
    limiter.heard("10.0.0.1")  # another worker's: counted, not told again
    assert told == ["10.0.0.1"] and limiter.blocked("10.0.0.1") == 10


def test_what_a_limiter_counted_makes_another_refuse_the_same_addresses() -> None:
    clock = Clock()
    limiter = FailureLimiter(burst=3, refill=10, clock=clock)
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"):
        limiter.failed(address)
    clock.now += 5  # half a failure refilled: still counted as a whole one
    assert limiter.counted() == {"10.0.0.1": 3, "10.0.0.2": 1}
    other = FailureLimiter(burst=3, refill=10, clock=clock)
    for address, count in limiter.counted().items():
        for _ in range(count):
            other.heard(address)
    assert other.blocked("10.0.0.1") == 10 and other.blocked("10.0.0.2") is None
    clock.now += 30  # every bucket full again: nothing left to tell
    assert limiter.counted() == {}


def test_agents_never_reach_the_gateway_hosts_own_addresses() -> None:
    auth, _, _, _, _ = make(agent())
    who = auth.authenticate(basic("alice", TOKEN), None)
    assert isinstance(who, Principal)
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST.", "x.localhost", "0.0.0.0"):
        assert not who.may_reach(host), host
    for host in ("169.254.169.254", "fe80::1", "::ffff:127.0.0.1"):
        assert not who.may_reach(host), host
    for host in ("api.openai.com", "10.0.0.5", "192.168.1.1", "2001:db8::1", "localhost.example"):
        assert who.may_reach(host), host
    assert Principal(None, who.router).may_reach("127.0.0.1")  # a run's child is on that host anyway


def test_a_run_agent_has_a_runs_rights_and_a_stored_agent_only_its_own() -> None:
    from authsome.gateway.principals import principal_for

    rights = Rights(providers=("openai",), connections={"openai": ("default",)})
    stored = principal_for(agent("alice", rights=rights), [Route(OPENAI)])
    run = principal_for(agent("run.0123456789ab", rights=rights), [Route(OPENAI)])
    assert not stored.may_use("openai", "work") and not stored.host_local
    assert run.may_use("openai", "work") and run.host_local  # any stored connection, this host: as its own proxy


def test_a_run_agents_token_opens_nothing_from_another_host() -> None:
    from authsome.gateway.principals import RUN_ELSEWHERE

    run = agent("run.0123456789ab")
    auth, _, _, _, denied = make(run)
    header = basic(run.name, TOKEN)
    for here in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert isinstance(auth.authenticate(header, here), Principal), here
    # the answer cached for this host is not given to another: a leaked run token is useless elsewhere
    for elsewhere in ("10.0.0.2", "172.17.0.2", None):
        assert auth.authenticate(header, elsewhere) == Denied(407, RUN_ELSEWHERE), elsewhere
    assert denied[-1] == (run.name, Denied(407, RUN_ELSEWHERE))
    alice = agent("alice")  # a stored agent is served wherever it is
    auth, _, _, _, _ = make(alice)
    assert isinstance(auth.authenticate(basic("alice", TOKEN), "10.0.0.2"), Principal)
