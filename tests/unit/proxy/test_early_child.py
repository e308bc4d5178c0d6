"""The child of `run` starts while the proxy is still starting: it waits for the proxy or ends first, and a proxy that
cannot start takes the child down with it."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from authsome.errors import AuthsomeError
from authsome.proxy.runner import _proxy_started


class Proxy:
    """Stands in for ProxyServer's start-up handshake only (``ready`` and ``wait_ready``)."""

    def __init__(self, failure: str | None = None) -> None:
        self.ready = threading.Event()
        self.failure = failure

    def wait_ready(self) -> int:
        if self.failure:
            raise AuthsomeError(f"the proxy did not start: {self.failure}")
        return 1234


def test_a_child_that_ends_before_the_proxy_is_ready_is_not_held_back() -> None:
    child = subprocess.Popen(["true"])
    started = time.monotonic()
    _proxy_started(Proxy(), child)  # type: ignore[arg-type]  # ready is never set
    assert time.monotonic() - started < 5 and child.returncode == 0


def test_a_proxy_that_cannot_start_ends_the_child_and_says_why() -> None:
    child = subprocess.Popen(["sleep", "30"])
    proxy = Proxy(failure="cannot listen")
    threading.Timer(0.1, proxy.ready.set).start()
    with pytest.raises(AuthsomeError, match="cannot listen"):
        _proxy_started(proxy, child)  # type: ignore[arg-type]
    assert child.returncode == -15  # SIGTERM, not left running


def test_a_ready_proxy_lets_the_child_run_on() -> None:
    child = subprocess.Popen(["sleep", "0.3"])
    proxy = Proxy()
    proxy.ready.set()
    _proxy_started(proxy, child)  # type: ignore[arg-type]
    assert child.poll() is None
    assert child.wait(5) == 0
