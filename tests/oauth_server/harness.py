"""Run a login on a worker thread while the test drives Chromium (playwright's sync API stays on the main thread)."""

from __future__ import annotations

import io
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from authsome.flows import oauth
from authsome.flows.ui import PlainUI

if TYPE_CHECKING:
    from authsome.models import ClientConfig, Credential


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
        self._pool = ThreadPoolExecutor(1)
        self.future: Future[tuple[Credential, ClientConfig]] = self._pool.submit(oauth.login, ui=ui, **kwargs)
        self._pool.shutdown(wait=False)

    def url(self, timeout: float = 15) -> str:
        try:
            return self.ui.urls.get(timeout=timeout)
        except queue.Empty:
            if self.future.done():
                self.future.result()  # raise the login's error
            raise

    def result(self, timeout: float = 30) -> tuple[Credential, ClientConfig]:
        return self.future.result(timeout)
