"""What a login flow needs from whoever runs it: messages, prompts, a browser and a countdown.

The CLI implements :class:`FlowUI` with rich (masked prompts on a TTY, a live countdown); :class:`PlainUI` is the
plain implementation for the library, tests and non-interactive use. Flows never print or read the terminal directly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import IO, Protocol, runtime_checkable

from authsome.errors import UsageError


@runtime_checkable
class FlowUI(Protocol):
    """The user-facing side of a login flow. Secret values are passed *to* it only by ``prompt_secret`` returns."""

    @property
    def is_interactive(self) -> bool:
        """True when a human can answer prompts (a TTY on both ends)."""
        ...

    def info(self, message: str) -> None:
        """Tell the user something (a URL to open, a code to type, progress)."""
        ...

    def warn(self, message: str) -> None:
        """Tell the user something went not quite as planned."""
        ...

    def prompt(self, label: str) -> str:
        """Ask for a non-secret value (a client id) and return the answer."""
        ...

    def prompt_secret(self, label: str) -> str:
        """Ask for a secret value with masked input and return it."""
        ...

    def open_browser(self, url: str) -> bool:
        """Try to open ``url`` in the user's browser; False when no browser could be started."""
        ...

    def countdown(self, message: str, seconds_left: float) -> None:
        """Show or update a waiting line (``waiting for approval``, time left); called about once a second."""
        ...

    def countdown_done(self) -> None:
        """Clear the waiting line shown by :meth:`countdown`."""
        ...


def at_terminal(stream: IO[str] | None) -> bool:
    """True when ``stream`` (stdin) is a terminal: a person is there who can fill in a browser form the flow opens.

    Without one (``</dev/null``, a pipe, an agent's subprocess) a flow must not wait for a form nobody will see.
    """
    if stream is None:
        return False
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed or detached
        return False


class PlainUI:
    """A :class:`FlowUI` without a terminal: messages go to a stream, answers come from a list you give it.

    ``answers``/``secret_answers`` are consumed in order by :meth:`prompt`/:meth:`prompt_secret`; when they run out,
    or none were given, prompting raises :class:`UsageError`. ``browser`` decides what "opening" a URL does (tests pass
    a callable that drives a headless browser); without one, no browser is opened and the flows print the URL.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        answers: Iterable[str] = (),
        secret_answers: Iterable[str] = (),
        browser: Callable[[str], bool] | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.stream = stream
        self._answers = list(answers)
        self._secrets = list(secret_answers)
        self._browser = browser
        self._interactive = bool(self._answers or self._secrets) if interactive is None else interactive
        self.messages: list[str] = []  # everything shown, for tests

    @property
    def is_interactive(self) -> bool:
        return self._interactive

    def _emit(self, text: str) -> None:
        self.messages.append(text)
        out = self.stream if self.stream is not None else sys.stderr
        print(text, file=out, flush=True)

    def info(self, message: str) -> None:
        self._emit(message)

    def warn(self, message: str) -> None:
        self._emit(f"Warning: {message}")

    def prompt(self, label: str) -> str:
        if not self._answers:
            raise UsageError(f"cannot ask for {label}: no terminal to prompt on", "pass it as an option instead")
        return self._answers.pop(0)

    def prompt_secret(self, label: str) -> str:
        if not self._secrets:
            raise UsageError(f"cannot ask for {label}: no terminal to prompt on", "set it in the environment instead")
        return self._secrets.pop(0)

    def open_browser(self, url: str) -> bool:
        return self._browser(url) if self._browser is not None else False

    def countdown(self, message: str, seconds_left: float) -> None:
        self.messages.append(f"{message} ({int(seconds_left)}s left)")

    def countdown_done(self) -> None:
        return None
