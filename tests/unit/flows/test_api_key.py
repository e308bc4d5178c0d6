"""API-key login: source order, validation without echoing the key, and the one-shot browser form over raw HTTP."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from tests.oauth_server.harness import in_background

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows.api_key import check_api_key, obtain_api_key
from authsome.flows.ui import PlainUI
from authsome.models import Credential

GOOD = "ak-0123456789abcdef"
PATTERN = r"ak-[0-9a-f]{16}"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Forbidden(io.StringIO):
    def readline(self, *args: Any) -> str:
        raise AssertionError("stdin must not be read")


def test_env_var_wins_over_stdin_and_prompt(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(env_var="ACME_KEY", key_pattern=PATTERN)
    ui = PlainUI(secret_answers=["ak-ffffffffffffffff"])
    cred = obtain_api_key(prov, env={"ACME_KEY": f"  {GOOD}\n"}, stdin=_Forbidden(), ui=ui)
    assert cred.kind == "api_key" and cred.api_key is not None and cred.api_key.reveal() == GOOD
    assert cred.metadata["source"] == "env"


def test_piped_stdin_is_read_when_no_env_var(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(env_var="ACME_KEY", key_pattern=PATTERN)
    cred = obtain_api_key(prov, env={}, stdin=io.StringIO(GOOD + "\nsecond line ignored\n"), ui=PlainUI())
    assert cred.api_key is not None and cred.api_key.reveal() == GOOD and cred.metadata["source"] == "stdin"


def test_empty_env_var_counts_as_unset(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(env_var="ACME_KEY")
    cred = obtain_api_key(prov, env={"ACME_KEY": ""}, stdin=io.StringIO(GOOD), ui=PlainUI())
    assert cred.metadata["source"] == "stdin"


def test_terminal_stdin_is_not_read_and_the_prompt_is_masked(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(key_pattern=PATTERN)
    ui = PlainUI(secret_answers=[GOOD], stream=io.StringIO())
    cred = obtain_api_key(prov, env={}, stdin=_Tty("not a key"), ui=ui)
    assert cred.api_key is not None and cred.api_key.reveal() == GOOD and cred.metadata["source"] == "prompt"


def test_prompt_asks_again_after_a_bad_key_and_never_echoes_it(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(key_pattern=PATTERN)
    out = io.StringIO()
    ui = PlainUI(secret_answers=["wrong-key-value", GOOD], stream=out)
    cred = obtain_api_key(prov, env={}, stdin=None, ui=ui)
    assert cred.api_key is not None and cred.api_key.reveal() == GOOD
    assert "does not look like an API key for Acme" in out.getvalue()
    assert "wrong-key-value" not in out.getvalue()


def test_prompt_gives_up_after_three_bad_answers(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(key_pattern=PATTERN)
    ui = PlainUI(secret_answers=["bad1", "bad2", "bad3"], stream=io.StringIO())
    with pytest.raises(UsageError) as info:
        obtain_api_key(prov, env={}, stdin=None, ui=ui)
    assert "bad3" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("   \n", "empty"),
        ("ak-0123\x1b[31m456789abcdef", "control characters"),
        ("ak-0123456789\x00abcdef", "control characters"),
        ("sk-0123456789abcdef", "does not look like"),
        ("ak-0123456789abcdef-extra", "does not look like"),
        ("a" * 9000, "too long"),
    ],
)
def test_bad_keys_are_refused_without_showing_them(
    api_key_provider: Callable[..., Any], value: str, reason: str
) -> None:
    prov = api_key_provider(env_var="ACME_KEY", key_pattern=PATTERN)
    with pytest.raises(UsageError, match=reason) as info:
        env = {"ACME_KEY": value} if value.strip() else {}
        obtain_api_key(prov, env=env, stdin=io.StringIO(value), ui=PlainUI(), allow_browser=False)
    text = str(info.value) + (info.value.hint or "")
    if value.strip():
        assert value.strip() not in text
        assert "0123456789" not in text


def test_env_source_is_named_in_the_error(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(env_var="ACME_KEY", key_pattern=PATTERN)
    with pytest.raises(UsageError, match=r"from \$ACME_KEY"):
        obtain_api_key(prov, env={"ACME_KEY": "nope"}, stdin=None, ui=PlainUI())


def test_no_source_and_no_browser_says_what_to_do(api_key_provider: Callable[..., Any]) -> None:
    prov = api_key_provider(env_var="ACME_KEY")
    with pytest.raises(UsageError) as info:
        obtain_api_key(prov, env={}, stdin=io.StringIO(""), ui=PlainUI(), allow_browser=False)
    assert info.value.hint is not None and "ACME_KEY" in info.value.hint and "stdin" in info.value.hint


def test_without_a_terminal_there_is_no_form_to_wait_for(api_key_provider: Callable[..., Any]) -> None:
    """No env var, an empty pipe, no terminal: a script or an agent gets the error at once (issue 12, item 1)."""
    ui = PlainUI(browser=lambda url: True, stream=io.StringIO())
    future = in_background(obtain_api_key, api_key_provider(env_var="ACME_KEY"), env={}, stdin=io.StringIO(""), ui=ui)
    with pytest.raises(UsageError, match="no API key for Acme: no environment variable, no stdin and no terminal"):
        future.result(5)
    assert not ui.messages  # no form was served


def test_check_api_key_without_pattern_accepts_any_clean_key(api_key_provider: Callable[..., Any]) -> None:
    assert check_api_key(api_key_provider(), "  anything-goes  ", source="x").reveal() == "anything-goes"


# -- the browser form over raw HTTP (a real browser drives it in test_api_key_browser.py) ---------------------------


class _FormSession:
    """Runs obtain_api_key in a thread; the 'browser' just records the form URL."""

    def __init__(self, prov: Any, timeout: float = 10) -> None:
        self.opened = threading.Event()
        self.url = ""
        self.pool = ThreadPoolExecutor(1)
        self.ui = PlainUI(browser=self._open, stream=io.StringIO())
        self.future: Future[Credential] = self.pool.submit(
            obtain_api_key, prov, env={}, stdin=io.StringIO(""), ui=self.ui, timeout=timeout, allow_browser=True
        )
        assert self.opened.wait(5)

    def _open(self, url: str) -> bool:
        self.url = url
        self.opened.set()
        return True

    @property
    def origin(self) -> str:
        return re.match(r"http://[^/]+", self.url).group(0)  # type: ignore[union-attr]

    def csrf(self, client: httpx.Client) -> str:
        page = client.get(self.url)
        assert page.status_code == 200
        return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def test_form_accepts_one_valid_key_then_is_gone(api_key_provider: Callable[..., Any]) -> None:
    session = _FormSession(api_key_provider(display_name="Acme Cloud", key_pattern=PATTERN))
    with httpx.Client() as client:
        page = client.get(session.url)
        assert "Acme Cloud" in page.text
        csrf = session.csrf(client)
        ok = client.post(session.url, data={"csrf": csrf, "secret": GOOD}, headers={"Origin": session.origin})
        assert ok.status_code == 200 and "received" in ok.text and GOOD not in ok.text
        cred = session.future.result(5)
        assert cred.api_key is not None and cred.api_key.reveal() == GOOD and cred.metadata["source"] == "browser"
        with pytest.raises(httpx.ConnectError):
            client.post(session.url, data={"csrf": csrf, "secret": GOOD})
    assert GOOD not in "\n".join(session.ui.messages)


def test_form_refuses_wrong_token_missing_csrf_foreign_origin_and_json(api_key_provider: Callable[..., Any]) -> None:
    session = _FormSession(api_key_provider(key_pattern=PATTERN))
    with httpx.Client() as client:
        csrf = session.csrf(client)
        wrong_path = session.url.rsplit("/", 2)[0] + "/not-the-token/"
        assert client.get(wrong_path).status_code == 404
        assert client.post(wrong_path, data={"csrf": csrf, "secret": GOOD}).status_code == 404
        assert client.post(session.url, data={"secret": GOOD}).status_code == 403
        assert client.post(session.url, data={"csrf": "forged", "secret": GOOD}).status_code == 403
        foreign = {"Origin": "https://evil.example"}
        assert client.post(session.url, data={"csrf": csrf, "secret": GOOD}, headers=foreign).status_code == 403
        cross_site = {"Sec-Fetch-Site": "cross-site"}
        assert client.post(session.url, data={"csrf": csrf, "secret": GOOD}, headers=cross_site).status_code == 403
        for headers in ({"Origin": "null"}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}):
            assert client.post(session.url, data={"csrf": csrf, "secret": GOOD}, headers=headers).status_code == 403
        assert client.post(session.url, json={"csrf": csrf, "secret": GOOD}).status_code == 415
        assert not session.future.done()
        bad = client.post(session.url, data={"csrf": csrf, "secret": "sk-wrong-provider"})
        assert bad.status_code == 400 and "does not look like" in bad.text and "sk-wrong-provider" not in bad.text
        assert not session.future.done()
        assert client.post(session.url, data={"csrf": csrf, "secret": GOOD}).status_code == 200
    assert session.future.result(5).api_key == check_api_key(api_key_provider(), GOOD, source="x")


def test_form_times_out_with_authentication_failed(api_key_provider: Callable[..., Any]) -> None:
    session = _FormSession(api_key_provider(), timeout=0.5)
    with pytest.raises(AuthenticationFailed, match="no Acme API key was entered"):
        session.future.result(5)


def test_form_url_is_printed_when_no_browser_opens(api_key_provider: Callable[..., Any]) -> None:
    out = io.StringIO()
    ui = PlainUI(stream=out)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(obtain_api_key, api_key_provider(), env={}, stdin=_Tty(""), ui=ui, timeout=10)
        for _ in range(100):
            match = re.search(r"http://127\.0\.0\.1:\d+/[\w-]+/", out.getvalue())
            if match:
                break
            threading.Event().wait(0.05)
        assert match, out.getvalue()
        with httpx.Client() as client:
            page = client.get(match.group(0))
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            client.post(match.group(0), data={"csrf": csrf, "secret": GOOD})
        assert fut.result(5).api_key is not None
