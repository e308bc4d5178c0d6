"""The upstream session store: which session a new connection is offered (the e2e test sees a real resumption)."""

from __future__ import annotations

from typing import Any

from authsome.proxy import tls
from authsome.proxy.tls import SessionStore


class Conn:
    """Records what the store does with a pyOpenSSL connection: the session set, the session it hands out."""

    def __init__(self, session: object | None = None) -> None:
        self.offered: object | None = None
        self.session = session

    def set_session(self, session: object) -> None:
        self.offered = session

    def get_session(self) -> object | None:
        return self.session


KEY: Any = ("api.openai.com", ("api.openai.com", 443))


def test_a_session_is_offered_only_to_the_same_name_after_a_response() -> None:
    store = SessionStore()
    first = Conn(session="ticket-1")
    store.offer("c1", KEY, first)
    assert first.offered is None  # nothing known yet
    racing = Conn()
    store.offer("c2", KEY, racing)
    assert racing.offered is None  # c1 has not answered yet
    store.first_response("c1")
    later = Conn()
    store.offer("c3", KEY, later)
    assert later.offered == "ticket-1"
    other = Conn()
    store.offer("c4", ("api.openai.com.evil", ("api.openai.com.evil", 443)), other)
    assert other.offered is None


def test_the_newest_session_wins_and_a_failed_handshake_forgets_it() -> None:
    store = SessionStore()
    conn = Conn(session="ticket-1")
    store.offer("c1", KEY, conn)
    store.first_response("c1")
    conn.session = "ticket-2"  # the server sent another ticket later
    store.ended("c1", established=True)
    fresh = Conn()
    store.offer("c2", KEY, fresh)
    assert fresh.offered == "ticket-2"
    store.failed("c2")
    again = Conn()
    store.offer("c3", KEY, again)
    assert again.offered is None


def test_the_store_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(tls, "MAX_SESSIONS", 2)
    store = SessionStore()
    for n in range(3):
        store.offer(f"c{n}", (f"h{n}", (f"h{n}", 443)), Conn(session=f"t{n}"))
        store.ended(f"c{n}", established=True)
    probe = Conn()
    store.offer("p", ("h0", ("h0", 443)), probe)
    assert probe.offered is None  # the oldest name was dropped
    store.offer("q", ("h2", ("h2", 443)), probe)
    assert probe.offered == "t2"
