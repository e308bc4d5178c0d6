"""Errors that explain themselves: a message, a hint with the fix, and a documented exit code.

    AuthsomeError                 1  generic
    ├── UsageError                2  bad input (flags, provider JSON, key format, …)
    ├── ProviderNotFound          3  no provider of that name
    ├── AuthenticationFailed      4  login or proxy authentication did not succeed
    ├── CredentialMissing         5  no usable credential for a provider/connection
    ├── RefreshFailed             6  an OAuth token could not be refreshed
    └── StoreUnavailable          7  the store or its master key cannot be used

Messages never contain secret values. The CLI catches ``AuthsomeError`` in one place and prints
``Error: <message>`` plus the hint on stderr, then exits with ``exit_code``.
"""

from __future__ import annotations


class AuthsomeError(Exception):
    """Base error: ``message`` says what went wrong, ``hint`` says what to do about it.

    ``fix_command``, when there is one, is the command that fixes it (``authsome login github --connection work``),
    as data: the proxy hands it to the child as is, nobody takes it out of the hint's prose.
    """

    exit_code: int = 1

    def __init__(
        self, message: str, hint: str | None = None, *, exit_code: int | None = None, fix_command: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fix_command = fix_command
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"

    def to_dict(self) -> dict[str, object]:
        """Stable JSON form used by ``--json`` output."""
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint, "exit_code": self.exit_code}


class UsageError(AuthsomeError):
    """Bad input: a flag, a provider definition, a key that does not fit its pattern."""

    exit_code = 2


class ProviderNotFound(AuthsomeError):
    """No bundled or registered provider has that name."""

    exit_code = 3


class AuthenticationFailed(AuthsomeError):
    """A login did not complete (denied consent, state mismatch, bad token response…)."""

    exit_code = 4


class CredentialMissing(AuthsomeError):
    """No usable credential is stored for that provider/connection."""

    exit_code = 5


class RefreshFailed(AuthsomeError):
    """An OAuth token could not be refreshed."""

    exit_code = 6


class StoreUnavailable(AuthsomeError):
    """The store, its lock or its master key cannot be used (tampering, wrong passphrase, bad home…)."""

    exit_code = 7


class RefusedInRun(AuthsomeError):
    """A secret was asked for from inside ``authsome run`` (a guard-rail: the sandbox is the boundary)."""

    exit_code = 8


EXIT_CODES: dict[int, str] = {
    0: "ok",
    1: "generic error",
    2: "usage error / bad input",
    3: "provider not found",
    4: "authentication failed",
    5: "credential missing",
    6: "refresh failed",
    7: "store unavailable",
    8: "refused inside authsome run",
}
