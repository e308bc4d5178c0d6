"""A gateway on the shared store commits a request's audit record before the agent sees the answer: a replica killed
with SIGKILL right after answering has every answered request in the trail, and the trail verifies."""

from __future__ import annotations

import threading

import httpx
import pytest
from tests.e2e.store.fleet import Fleet, Upstream, agent, kill

pytestmark = pytest.mark.e2e

KEY = "sk-durable-0123456789abcdefghij"
ANSWERED_BEFORE_KILL = 60


def test_a_replica_killed_right_after_answering_loses_no_record(fleet: Fleet, api: Upstream) -> None:
    assert fleet.cli(0, "login", "openai", OPENAI_API_KEY=KEY).code == 0
    gateway = fleet.start(0)
    bots = [agent(fleet, 0, gateway, f"bot{i}", "--provider", "openai") for i in range(3)]
    answered: list[tuple[str, int]] = []  # (path, status) of every answer an agent received
    enough = threading.Event()
    stop = threading.Event()

    def load(bot_index: int) -> None:
        bot = bots[bot_index]
        with bot.client(timeout=10) as http:
            for n in range(10_000):
                if stop.is_set():
                    return
                path = f"/v1/probe/{bot.name}-{n}"
                try:
                    status = http.get(f"https://api.openai.com{path}").status_code
                except httpx.HTTPError:
                    return  # the replica is gone: no answer, nothing owed
                answered.append((path, status))
                if len(answered) >= ANSWERED_BEFORE_KILL:
                    enough.set()

    with bots[0].client(timeout=10) as http, http.stream("GET", "https://api.openai.com/sse/open") as streamed:
        assert streamed.status_code == 200  # answered: the status line is here, the body is two seconds away
        threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(len(bots))]
        for thread in threads:
            thread.start()
        assert enough.wait(60), f"only {len(answered)} answers in 60 s"
        kill(gateway)  # right after an answer, with others under way
        stop.set()
    for thread in threads:
        thread.join(15)

    records = [r for r in fleet.cli(0, "log", "--json").json()["records"] if r["event"] == "request"]
    recorded = {r["path"]: r for r in records}
    missing = [path for path, _ in answered if path not in recorded]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no record: {missing[:5]}"
    assert all(status == 200 and recorded[path]["status"] == 200 for path, status in answered)
    assert recorded["/sse/open"]["status"] == 200 and recorded["/sse/open"]["agent"] == "bot0"
    assert {recorded[path]["agent"] for path, _ in answered} == {"bot0", "bot1", "bot2"}
    verified = fleet.cli(0, "log", "--verify", "--json")
    assert verified.code == 0 and verified.json()["ok"], verified.out


def test_an_answer_that_fails_after_it_started_gets_a_second_record(fleet: Fleet, api: Upstream) -> None:
    assert fleet.cli(0, "login", "openai", OPENAI_API_KEY=KEY).code == 0
    gateway = fleet.start(0)
    bot = agent(fleet, 0, gateway, "bot", "--provider", "openai")
    with bot.client(timeout=10) as http, pytest.raises(httpx.HTTPError):
        http.get("https://api.openai.com/broken-gzip")  # 200, then a body that cannot be checked: cut
    assert gateway.stop() == 0
    records = [r for r in fleet.cli(0, "log", "--json").json()["records"] if r.get("path") == "/broken-gzip"]
    assert [(r["event"], r["status"]) for r in records] == [("request", 200), ("request_end", 200)]
    assert "cut" not in (records[0]["reason"] or "") and "cut: " in records[1]["reason"]
    assert fleet.cli(0, "log", "--verify").code == 0
