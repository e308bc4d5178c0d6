"""The API-key browser form, driven by a real headless Chromium: type the key, submit, get the credential."""

from __future__ import annotations

import io
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from authsome.flows.api_key import obtain_api_key
from authsome.flows.ui import PlainUI

if TYPE_CHECKING:
    from playwright.sync_api import Browser

KEY = "ak-0123456789abcdef"
PATTERN = r"ak-[0-9a-f]{16}"

pytestmark = pytest.mark.e2e


def _start(prov: Any) -> tuple[Any, queue.Queue[str], PlainUI]:
    urls: queue.Queue[str] = queue.Queue()
    ui = PlainUI(browser=lambda url: urls.put(url) is None, stream=io.StringIO())
    pool = ThreadPoolExecutor(1)
    future = pool.submit(obtain_api_key, prov, env={}, stdin=io.StringIO(""), ui=ui, timeout=20, allow_browser=True)
    pool.shutdown(wait=False)
    return future, urls, ui


def test_browser_form_submits_the_key_once(chromium: Browser, api_key_provider: Callable[..., Any]) -> None:
    future, urls, ui = _start(api_key_provider(display_name="Acme Cloud", key_pattern=PATTERN))
    url = urls.get(timeout=5)
    assert KEY not in url
    page = chromium.new_page()
    try:
        page.goto(url)
        assert "Acme Cloud" in page.inner_text("h1")
        assert page.get_attribute("#secret", "type") == "password"
        page.fill("#secret", KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("text=received")
        cred = future.result(10)
        assert cred.api_key is not None and cred.api_key.reveal() == KEY
        assert KEY not in page.url and KEY not in page.content()
        # The listener is gone: going back and submitting again cannot deliver a second key.
        response = None
        try:
            response = page.goto(url)
        except Exception as exc:  # connection refused surfaces as a navigation error
            assert "ERR_CONNECTION_REFUSED" in str(exc)
        assert response is None or response.status >= 400
    finally:
        page.close()
    assert all(KEY not in m for m in ui.messages)


def test_browser_shows_bad_key_error_then_accepts_a_good_one(
    chromium: Browser, api_key_provider: Callable[..., Any]
) -> None:
    future, urls, _ = _start(api_key_provider(key_pattern=PATTERN))
    url = urls.get(timeout=5)
    page = chromium.new_page()
    try:
        page.goto(url)
        page.fill("#secret", "sk-not-an-acme-key")
        page.click("button[type=submit]")
        alert = page.wait_for_selector("[role=alert]")
        assert alert is not None and "does not look like" in alert.inner_text()
        assert "sk-not-an-acme-key" not in page.content()
        assert not future.done()
        page.fill("#secret", KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("text=received")
        cred = future.result(10)
        assert cred.api_key is not None and cred.api_key.reveal() == KEY
    finally:
        page.close()


def test_wrong_token_url_is_refused_and_form_still_works(
    chromium: Browser, api_key_provider: Callable[..., Any]
) -> None:
    future, urls, _ = _start(api_key_provider(key_pattern=PATTERN))
    url = urls.get(timeout=5)
    page = chromium.new_page()
    try:
        wrong = url.rsplit("/", 2)[0] + "/guessed-token/"
        response = page.goto(wrong)
        assert response is not None and response.status == 404
        assert page.locator("#secret").count() == 0
        assert not future.done()
        page.goto(url)
        page.fill("#secret", KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("text=received")
        assert future.result(10).api_key is not None
    finally:
        page.close()
