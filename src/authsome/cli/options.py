"""Options and values shared by several commands: the rights given to a child (``run``) or an agent (``agent
create``), and durations (``--expires``, ``--since``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from authsome.errors import UsageError

F = TypeVar("F", bound=Callable[..., object])
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def policy_options(command: F) -> F:
    """``--allow RULE`` (repeatable) and ``--policy FILE``: which requests may go out (authsome.policy)."""
    command = click.option(
        "--policy",
        "policy_file",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="Allow rules from a TOML or JSON file.",
    )(command)
    return click.option(
        "--allow",
        "allow",
        multiple=True,
        metavar="RULE",
        help="Only allow matching requests, e.g. 'github:GET /repos/**' (repeatable; deny by default).",
    )(command)


def connection_pairs(items: tuple[str, ...]) -> list[tuple[str, str]]:
    """``--connection PROVIDER=NAME`` values as (provider, name) pairs, in order."""
    pairs = []
    for item in items:
        provider, sep, name = item.partition("=")
        if not sep or not provider or not name:
            raise UsageError(f"--connection {item!r} is not PROVIDER=NAME", "e.g. --connection github=work")
        pairs.append((provider, name))
    return pairs


def parse_duration(text: str, option: str, what: str, *, zero: bool = False) -> float:
    """``90s``, ``30m``, ``8h``, ``7d``, ``2w`` as seconds (``zero``: ``0s`` too); ``what`` names the value in the error
    (``--expires '8x' is not a lifetime``)."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not (number.isascii() and number.isdigit()) or (int(number) == 0 and not zero):
        raise UsageError(f"{option} {text!r} is not {what}", "use a number and s, m, h, d or w, e.g. 8h")
    return int(number) * _UNITS[unit]
