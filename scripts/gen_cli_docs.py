"""Generate docs/cli.md from the CLI's own --help text (a test fails when the file is stale).

Run: .venv/bin/python scripts/gen_cli_docs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from authsome.cli.main import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def render() -> str:
    parts = [
        "# CLI reference\n",
        "Generated from `authsome --help` by `scripts/gen_cli_docs.py`; do not edit by hand.\n",
    ]
    ctx = click.Context(cli, info_name="authsome", terminal_width=100, max_content_width=100)
    parts.append("## authsome\n\n```\n" + cli.get_help(ctx) + "\n```\n")
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        sub = click.Context(command, info_name=name, parent=ctx, terminal_width=100, max_content_width=100)
        parts.append(f"## authsome {name}\n\n```\n" + command.get_help(sub) + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    DOC.write_text(render())
    sys.stdout.write(f"wrote {DOC}\n")
