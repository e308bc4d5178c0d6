"""The terminal side of login flows: messages on stderr, masked prompts, a browser, a live countdown."""

from __future__ import annotations

import sys
import webbrowser

from authsome.cli.output import Output
from authsome.errors import UsageError


class ConsoleUI:
    """:class:`authsome.flows.ui.FlowUI` for a terminal. Nothing secret is ever echoed."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self._console = output.console(stderr=True)
        self._counting = False

    @property
    def is_interactive(self) -> bool:
        return sys.stdin.isatty() and sys.stderr.isatty()

    def info(self, message: str) -> None:
        if not self.output.quiet:
            self._console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self._console.print(f"warning: {message}", style="yellow", markup=False)

    def prompt(self, label: str) -> str:
        if not self.is_interactive:
            raise UsageError(f"{label} is needed but there is no terminal to ask on", "pass it by flag or variable")
        return self._console.input(f"{label}: ")

    def prompt_secret(self, label: str) -> str:
        if not self.is_interactive:
            raise UsageError(f"{label} is needed but there is no terminal to ask on", "set the variable or pipe it")
        return self._console.input(f"{label} (input hidden): ", password=True)

    def open_browser(self, url: str) -> bool:
        try:
            return webbrowser.open(url)
        except webbrowser.Error:
            return False

    def countdown(self, message: str, seconds_left: float) -> None:
        if self.output.quiet or not sys.stderr.isatty():
            return
        self._counting = True
        sys.stderr.write(f"\r{message} ({int(seconds_left)}s left) ")
        sys.stderr.flush()

    def countdown_done(self) -> None:
        if self._counting:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._counting = False
