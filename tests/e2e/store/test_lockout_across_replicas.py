"""A brute-force guesser cannot spread its guesses over the replicas of a shared store: an address that used up its
wrong tokens on one replica is refused (429) by the others too, even with the right token."""

from __future__ import annotations

import base64
import socket
import time

import pytest
from tests.e2e.gateway.conftest import Gateway
from tests.e2e.store.fleet import Fleet, Upstream, agent

pytestmark = pytest.mark.e2e

KEY = "sk-first-0123456789abcdefghij"
WAIT = 10.0


def connect_status(gateway: Gateway, name: str, token: str) -> int:
    """The status a CONNECT to api.openai.com gets from ``gateway`` as agent ``name`` with ``token``."""
    credentials = base64.b64encode(f"{name}:{token}".encode()).decode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT) as sock:
        sock.sendall(
            b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
            + f"Proxy-Authorization: Basic {credentials}\r\n\r\n".encode()
        )
        head = sock.recv(4096).decode("latin-1")
    return int(head.split()[1])


def test_an_address_locked_out_on_one_replica_is_locked_out_on_the_others(fleet: Fleet, api: Upstream) -> None:
    assert fleet.cli(0, "login", "openai", OPENAI_API_KEY=KEY).code == 0
    fleet.home(1)  # the fleet's key, copied
    one, two = fleet.start(0), fleet.start(1)
    bot = agent(fleet, 0, one, "bot", "--provider", "openai")
    assert connect_status(two, "bot", bot.token) == 200  # the right token, before any guess

    assert [connect_status(one, "bot", "guess") for _ in range(10)] == [407] * 10  # the tenth empties the bucket
    assert connect_status(one, "bot", bot.token) == 429

    deadline = time.monotonic() + WAIT  # the other replica hears of the guesses as they are made
    while (status := connect_status(two, "bot", bot.token)) == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 429
    assert api.hits == []  # no request went upstream (a CONNECT alone reaches nobody)
