"""Two gateway replicas on one database, under load from several agents, in front of an API whose OAuth access tokens
come from the real OAuth server (short-lived, refresh tokens rotated on every use).

What a user relies on, checked from the outside: the token endpoint sees each refresh token once and every refresh
succeeds (one refresh per expiry, whichever replica needs it first); the API never receives a token that expired; a
replica killed with SIGKILL mid-load leaves the other serving every agent; every answered request is in the audit
trail, and ``authsome log --verify`` passes. Bounded: some 500 requests in 16 s on loopback.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.store.fleet import AgentClient, Fleet, TokenRelay, Upstream, agent, kill, token_relay
from tests.oauth_server.fixtures import SHORT_CLIENT, OAuthServer, _start_server, approve
from tests.oauth_server.harness import QueueUI, in_background

from authsome import Authsome, LoginOptions

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

LIFETIME = 8  # seconds an access token lives: refreshed 4 s before it expires (authsome's window for it)
AGENTS = 4
LOAD_SECONDS = 16.0
PACE = 0.12  # seconds between two requests of one agent


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServer]:
    """The real OAuth server, its short-lived client's access tokens living LIFETIME seconds."""
    server = _start_server(
        tmp_path_factory.mktemp("oidc-short") / "server.log", {"OIDC_SHORT_ACCESS_TOKEN_TTL": str(LIFETIME)}
    )
    yield server
    server.process.terminate()
    server.process.wait(10)


@pytest.fixture
def relay(short_lived: OAuthServer) -> Iterator[TokenRelay]:
    with token_relay(short_lived.issuer) as relayed:
        yield relayed


@dataclass
class Answer:
    path: str
    status: int
    sent: float  # when the request was made (an answer may arrive from a replica killed meanwhile)
    replica: int


def login(fleet: Fleet, server: OAuthServer, relay: TokenRelay, page: Page) -> None:
    """Register the provider (its token endpoint behind the counting relay) and log in through Chromium."""
    data = server.provider("pkce", token_url=relay.url).to_dict()
    data["client"] = {"client_id_env": "TESTIDP_CLIENT_ID"}
    data["host_url"] = "api.testidp.test"
    path = fleet.root / "testidp.json"
    path.write_text(json.dumps(data))
    auth = Authsome(fleet.home(0), store_url=fleet.url)
    auth.register(path)
    ui = QueueUI()
    future = in_background(auth.login, "testidp", LoginOptions(client_id=SHORT_CLIENT, redirect_port=0), ui=ui)
    approve(page, ui.urls.get(timeout=20))
    future.result(timeout=30)


def test_two_replicas_under_load_refresh_once_and_survive_a_kill(
    fleet: Fleet, api: Upstream, short_lived: OAuthServer, relay: TokenRelay, page: Page
) -> None:
    login(fleet, short_lived, relay, page)
    api.issued = relay.issued  # the API answers 401 to a token the server did not issue or that has expired
    fleet.home(1)
    gateways = [fleet.start(0), fleet.start(1)]
    bots = [agent(fleet, i % 2, gateways[0], f"bot{i}", "--provider", "testidp") for i in range(AGENTS)]
    answers: list[Answer] = []
    failures: list[str] = []
    dead: set[int] = set()
    kill_now = threading.Event()  # replica one is killed by the first agent it answers after this is set
    killed = threading.Event()
    killing = threading.Lock()
    killed_at = 0.0  # once replica one is dead
    start = time.monotonic()

    def kill_after_answer(replica: int) -> None:
        nonlocal killed_at
        with killing:
            if replica == 0 and kill_now.is_set() and not killed.is_set():
                dead.add(0)
                kill(gateways[0])
                killed_at = time.time()
                killed.set()

    def load(bot: AgentClient) -> None:
        clients = [replace(bot, gateway=g).client(timeout=15) for g in gateways]
        try:
            for n in range(10_000):
                if time.monotonic() - start > LOAD_SECONDS:
                    return
                alive = [i for i in range(len(gateways)) if i not in dead]
                replica = alive[n % len(alive)]
                path = f"/v1/items/{bot.name}-{n}"
                sent = time.time()
                try:
                    status = clients[replica].get(f"https://api.testidp.test{path}").status_code
                except httpx.TransportError as exc:
                    if replica not in dead:
                        failures.append(f"{bot.name} via replica {replica}: {exc!r}")
                    continue  # the killed replica: no answer, nothing owed
                answers.append(Answer(path, status, sent, replica))
                kill_after_answer(replica)
                time.sleep(PACE)
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=load, args=(bot,), daemon=True) for bot in bots]
    for thread in threads:
        thread.start()
    # Mid-load, one second after a refresh (never while one is under way: a replica killed between the server's
    # answer and saving it would lose the rotated token, which no replica can get back), replica one is killed
    # right after it answers an agent.
    deadline = time.monotonic() + LOAD_SECONDS
    while len(relay.issued.refreshes()) < 2:
        assert time.monotonic() < deadline, "no second refresh during the load"
        time.sleep(0.05)
    time.sleep(1.0)
    kill_now.set()
    assert killed.wait(5), "replica one answered nobody"
    for thread in threads:
        thread.join(LOAD_SECONDS + 30)
    assert gateways[1].stop() == 0  # drained, flushed

    # One refresh per expiry: each refresh token presented once, every refresh granted, one per token lifetime.
    refreshes = relay.issued.refreshes()
    assert len(refreshes) >= 3, refreshes
    assert all(r.status == 200 for r in refreshes), [(r.status, r.presented) for r in refreshes]
    assert len({r.presented for r in refreshes}) == len(refreshes)
    gaps = [b.answered_at - a.answered_at for a, b in itertools.pairwise(refreshes)]
    assert min(gaps) > LIFETIME / 2 - 1, gaps
    # No stale token: every request the API received carried a token the server issued and that had not expired.
    hits = [h for h in api.hits if h.host == "api.testidp.test"]
    stale = [h for h in hits if (relay.issued.expiry((h.authorization or "").removeprefix("Bearer ")) or 0) <= h.at]
    assert not stale and len(hits) >= len(answers)
    assert not failures and answers and all(a.status == 200 for a in answers), failures[:3]
    # The other replica kept serving every agent after the kill.
    after = [a for a in answers if a.sent > killed_at]  # asked once replica one was dead
    assert len(after) >= 50 and {a.replica for a in after} == {1}
    assert {a.path.split("/")[-1].split("-")[0] for a in after} == {b.name for b in bots}

    # Nothing lost: every answered request is in the trail, which verifies; the refreshes are in it, once each.
    log = fleet.cli(1, "log", "--json").json()["records"]
    recorded = {r["path"] for r in log if r["event"] == "request" and r.get("status") == 200}
    missing = [a.path for a in answers if a.path not in recorded]
    assert not missing, f"{len(missing)} of {len(answers)} answered requests have no record: {missing[:5]}"
    assert [r["ok"] for r in log if r["event"] == "refresh"] == [True] * len(refreshes)
    verified = fleet.cli(1, "log", "--verify", "--json")
    assert verified.code == 0 and verified.json()["ok"], verified.out
    assert time.monotonic() - start < 60
    print(f"{len(answers)} answers, {len(refreshes)} refreshes, {len(after)} after the kill; gaps {gaps}")
