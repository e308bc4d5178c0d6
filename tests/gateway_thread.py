"""A gateway served on a thread of the test process, for the length of a ``with`` block (both run e2e suites)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from authsome.gateway import state


@contextmanager
def gateway_thread(serve: Callable[[threading.Event], Any], files: state.GatewayFiles) -> Iterator[dict[str, Any]]:
    """Run ``serve(stop)`` on a thread until it has published its state in ``files`` (it listens); yield that state,
    then set ``stop`` and check that it stopped cleanly. A gateway that fails to start raises its own error here."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def serving() -> None:
        try:
            serve(stop)
        except BaseException as exc:  # reported to the test below
            failed.append(exc)

    thread = threading.Thread(target=serving, name="test-gateway", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while (published := state.read_state(files)) is None:
            if failed:
                raise failed[0]
            assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start within 60 s"
            time.sleep(0.02)
        yield published
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the gateway did not stop"
    assert not failed, failed
