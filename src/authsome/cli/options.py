"""Options shared by the commands that grant rights to a child (``run``) or an agent (``agent create``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from authsome.errors import UsageError

F = TypeVar("F", bound=Callable[..., object])


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
