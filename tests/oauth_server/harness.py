"""Run a login on a worker thread while the test drives Chromium (playwright's sync API stays on the main thread)."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from authsome.flows import oauth
from authsome.flows.ui import PlainUI

if TYPE_CHECKING:
    from authsome.models import ClientConfig, Credential

T = TypeVar("T")


def in_background(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
    """``fn(*args, **kwargs)`` on a daemon thread. A test that fails while a login still waits (for a browser that
    will never come) fails at once, and the waiting thread does not keep pytest from exiting."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=f"test-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return future


class QueueUI(PlainUI):
    """A PlainUI whose "browser" hands URLs to the test and whose prompt can wait for the test's answer."""

    def __init__(self, *, opens_browser: bool = True, interactive: bool = False) -> None:
        self.urls: queue.Queue[str] = queue.Queue()
        self.replies: queue.Queue[str] = queue.Queue()
        super().__init__(stream=io.StringIO(), browser=self._open if opens_browser else None, interactive=interactive)

    def _open(self, url: str) -> bool:
        self.urls.put(url)
        return True

    def prompt(self, label: str) -> str:
        self.messages.append(f"[prompt] {label}")
        return self.replies.get(timeout=60)

    @property
    def text(self) -> str:
        return "\n".join(self.messages)


class LoginRun:
    """``oauth.login(...)`` on a worker thread; the test reads the URL it opened and drives the browser."""

    def __init__(self, ui: QueueUI, **kwargs: Any) -> None:
        self.ui = ui
        self.future: Future[tuple[Credential, ClientConfig]] = in_background(oauth.login, ui=ui, **kwargs)

    def url(self, timeout: float = 15) -> str:
        try:
            return self.ui.urls.get(timeout=timeout)
        except queue.Empty:
            if self.future.done():
                self.future.result()  # raise the login's error
            raise

    def result(self, timeout: float = 30) -> tuple[Credential, ClientConfig]:
        return self.future.result(timeout)
