"""API-key login: the provider's variables, else stdin when it is a pipe, else a masked prompt, else a browser form.

A key never comes from a command-line argument, never appears in a URL, a log line or an error message. The browser
form (:mod:`authsome.flows.secret_form`) is a one-shot page on 127.0.0.1 behind a random path token; the first valid
key ends the flow and the listener closes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING

from authsome.errors import UsageError
from authsome.flows.secret_form import FORM_TIMEOUT, ask_in_browser
from authsome.flows.ui import FlowUI, at_terminal
from authsome.models import Credential
from authsome.providers.key_pattern import key_matches
from authsome.providers.schema import PLACEHOLDER
from authsome.secret import Secret

if TYPE_CHECKING:
    from authsome.providers.schema import Provider

MAX_KEY_LENGTH = 8192
PROMPT_ATTEMPTS = 3
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def obtain_api_key(
    provider: Provider,
    *,
    env: Mapping[str, str],
    stdin: IO[str] | None,
    ui: FlowUI,
    allow_browser: bool | None = None,
    timeout: float = FORM_TIMEOUT,
) -> Credential:
    """Get an API key for ``provider`` from the first source that has one, checked against its ``key_pattern``.

    The browser form is used when ``allow_browser`` is True (asked for), or when it is None and a person is at a
    terminal (:func:`~authsome.flows.ui.at_terminal`) who cannot be prompted; a script or an agent without a terminal
    gets a :class:`UsageError` at once instead of a form nobody will fill in.

    Raises :class:`UsageError` for a key that is empty, has control characters or does not fit the pattern (the
    message names the source, never the key), and :class:`AuthenticationFailed` when no source gave a key in time.
    """
    for env_var in provider.key_variables:  # api_key.env_var, then the provider's export variables
        if env.get(env_var, "").strip() not in ("", PLACEHOLDER):  # (a child of `authsome run` has placeholders)
            return _credential(check_api_key(provider, env[env_var], source=f"${env_var}"), "env")

    piped = _read_pipe(stdin)
    if piped is not None:
        return _credential(check_api_key(provider, piped, source="stdin"), "stdin")

    if ui.is_interactive and not allow_browser:
        return _credential(_prompt(provider, ui), "prompt")

    if allow_browser or (allow_browser is None and at_terminal(stdin)):
        return _credential(browser_form(provider, ui, timeout=timeout), "browser")

    ways = [f"set {provider.key_variables[0]}" if provider.key_variables else "", "pipe the key on stdin"]
    raise UsageError(
        f"no API key for {provider.display_name}: no environment variable, no stdin and no terminal",
        ", ".join(w for w in ways if w) + " or run in a terminal (--browser asks for it in a local browser form)",
    )


def check_api_key(provider: Provider, value: str, *, source: str) -> Secret:
    """Strip ``value`` and check it; raise :class:`UsageError` naming ``source`` (never the value) when it is bad."""
    key = value.strip()
    name = provider.display_name
    if not key:
        raise UsageError(f"the {name} API key from {source} is empty", "provide a non-empty key")
    if len(key) > MAX_KEY_LENGTH:
        raise UsageError(f"the {name} API key from {source} is too long", f"keys have at most {MAX_KEY_LENGTH} chars")
    if _CONTROL.search(key):
        raise UsageError(
            f"the {name} API key from {source} contains control characters", "paste the key alone, on one line"
        )
    pattern = provider.api_key.key_pattern if provider.api_key is not None else None
    if pattern and not key_matches(pattern, key):
        hint = provider.api_key.key_pattern_hint if provider.api_key is not None else None
        raise UsageError(
            f"the key from {source} does not look like an API key for {name} (expected pattern {pattern})",
            hint or "check that you copied the whole key for the right provider",
        )
    return Secret(key)


def _credential(key: Secret, source: str) -> Credential:
    return Credential(kind="api_key", api_key=key, metadata={"source": source})


def _read_pipe(stdin: IO[str] | None) -> str | None:
    """One line from ``stdin`` when it is not a terminal; None when there is no pipe or it is already at EOF."""
    if stdin is None:
        return None
    try:
        if stdin.isatty():
            return None
        line = stdin.readline()
    except (OSError, ValueError):  # closed or unreadable stdin
        return None
    return line if line else None


def _prompt(provider: Provider, ui: FlowUI) -> Secret:
    """Masked prompt, asked again (up to three times) when the answer is not a valid key."""
    for attempt in range(1, PROMPT_ATTEMPTS + 1):
        answer = ui.prompt_secret(f"{provider.display_name} API key")
        try:
            return check_api_key(provider, answer, source="the prompt")
        except UsageError as exc:
            if attempt == PROMPT_ATTEMPTS:
                raise
            ui.warn(exc.message)
    raise AssertionError("unreachable")


def browser_form(provider: Provider, ui: FlowUI, *, timeout: float = FORM_TIMEOUT, port: int = 0) -> Secret:
    """Serve a one-shot key form on 127.0.0.1, open it in the browser (or print its URL) and wait for one valid key."""
    return ask_in_browser(
        ui,
        what=f"{provider.display_name} API key",
        validate=lambda value: check_api_key(provider, value, source="the browser form"),
        timeout=timeout,
        port=port,
        hint="run the login again, or provide the key through its environment variable or stdin",
    )
