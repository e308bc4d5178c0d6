"""Wrong proxy credentials told across processes sharing a PostgreSQL store (store.pg.changes): another process's
are heard, with the address and profile they were for; this process's own are not heard back."""

from __future__ import annotations

import queue

import psycopg
from tests.pg import pg_server, pg_url  # noqa: F401  (registers the fixtures)

from authsome.store import pg
from authsome.store.backend import failure_teller, watch
from authsome.store.pg.changes import FAILURES, ORIGIN

WAIT = 10.0


def _heard(url: str, profile: str) -> tuple[queue.SimpleQueue[tuple[str, str]], object]:
    heard: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
    block = watch(url, profile, lambda what, name: heard.put((what, name)))
    block.__enter__()
    assert heard.get(timeout=WAIT) == ("all", "")  # listening (it reports everything on each connection)
    return heard, block


def test_another_process_s_failures_are_heard_and_this_one_s_are_not(pg_url: str) -> None:  # noqa: F811
    heard, block = _heard(pg_url, "default")
    try:
        tell = failure_teller(pg_url, "default")
        assert tell is not None
        with psycopg.connect(pg_url, autocommit=True) as spy:  # sees every notification, this process's own too
            spy.execute(f"LISTEN {FAILURES}")
            tell("10.0.0.7")  # this process's own: already counted here
            assert next(spy.notifies(timeout=WAIT)).payload == f"default:{ORIGIN}:10.0.0.7"  # sent before the others
        with psycopg.connect(pg_url, autocommit=True) as conn:  # as another replica sends it
            for payload in ("default:0123456789abcdef:10.0.0.8", "work:0123456789abcdef:10.0.0.9", "garbage"):
                conn.execute("SELECT pg_notify(%s, %s)", (FAILURES, payload))
            conn.execute("SELECT pg_notify(%s, %s)", (FAILURES, "default:0123456789abcdef:[::1]"))
        assert heard.get(timeout=WAIT) == ("failure", "10.0.0.8")
        assert heard.get(timeout=WAIT) == ("failure", "[::1]")  # other profiles' and malformed ones are left out
        assert heard.empty()
        assert failure_teller(None, "default") is None  # this machine's store: nobody to tell
    finally:
        block.__exit__(None, None, None)
        pg.database(pg_url).close()
