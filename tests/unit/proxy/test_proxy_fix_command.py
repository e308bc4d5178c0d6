"""The fix command in the proxy's 401 comes from the error's data, never out of its hint's prose."""

from __future__ import annotations

from authsome.errors import CredentialMissing, RefreshFailed, StoreUnavailable
from authsome.proxy.addon import fix_command


def test_the_command_the_error_carries_wins_over_its_hint() -> None:
    error = RefreshFailed("refused", "run `authsome login x --force`", fix_command="authsome login x --connection w")
    assert fix_command("x", "w", error) == "authsome login x --connection w"


def test_a_hint_that_is_not_a_command_gives_none() -> None:
    network = RefreshFailed("cannot reach the token endpoint", "check your network; authsome tries again")
    assert fix_command("x", "w", network) is None
    locked = StoreUnavailable("the store is locked", "run `authsome doctor`")  # a command, but not the error's fix
    assert fix_command("x", "w", locked) is None


def test_a_missing_credential_is_fixed_by_logging_in_to_that_connection() -> None:
    assert fix_command("x", "w", CredentialMissing("no credential", "run `authsome login x`")) == (
        "authsome login x --connection w"
    )
    assert fix_command("x", "default", RefreshFailed("expired", None)) == "authsome login x"
