"""``authsome`` command: global flags, one command per operation, errors caught in exactly one place."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from authsome.cli import exit_now
from authsome.cli.options import connection_pairs, parse_duration, policy_options
from authsome.cli.output import Output, flatten, iso_time, plain, relative_expiry
from authsome.errors import EXIT_CODES, AuthsomeError, UsageError

if TYPE_CHECKING:
    from authsome.api import Authsome

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = (
    "Errors: `Error: …` and `Hint: …` on stderr; with --json, one object "
    '{"error", "message", "hint", "exit_code"} on stdout and nothing on stderr (usage errors too).\n\n'
    "Exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()) + "."
)


def _set_meta(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value not in (None, False):
            ctx.meta[f"authsome.{key}"] = value

    return callback


def _store_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        from authsome.store.backend import check_url

        ctx.meta["authsome.store"] = check_url(value, on_command_line=True)


def common_options(func: F) -> F:
    """Flags accepted both before and after the command name (``authsome --json list`` = ``authsome list --json``)."""
    options = [
        click.option(
            "--json",
            "json_",
            is_flag=True,
            expose_value=False,
            callback=_set_meta("json"),
            is_eager=True,  # set before other options are checked, so that their errors come out as JSON too
            help="Machine-readable output.",
        ),
        click.option(
            "--profile",
            metavar="NAME",
            expose_value=False,
            callback=_set_meta("profile"),
            envvar="AUTHSOME_PROFILE",
            help="Profile to use (default: default).",
        ),
        click.option(
            "--verbose",
            "-v",
            is_flag=True,
            expose_value=False,
            callback=_set_meta("verbose"),
            help="More detail; tracebacks on errors.",
        ),
        click.option(
            "--quiet",
            "-q",
            is_flag=True,
            expose_value=False,
            callback=_set_meta("quiet"),
            help="Print only what was asked for.",
        ),
        click.option(
            "--no-color",
            is_flag=True,
            expose_value=False,
            callback=_set_meta("no_color"),
            help="Plain output without colour.",
        ),
        click.option(
            "--store",
            metavar="URL",
            expose_value=False,
            callback=_store_url,
            help="A shared store: postgresql://USER@HOST/DB (default: AUTHSOME_STORE_URL, else this home's files).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def out() -> Output:
    meta = click.get_current_context().meta
    return Output(
        json=bool(meta.get("authsome.json")),
        quiet=bool(meta.get("authsome.quiet")),
        verbose=bool(meta.get("authsome.verbose")),
        no_color=bool(meta.get("authsome.no_color")),
    )


def api() -> Authsome:
    from authsome.api import Authsome

    meta = click.get_current_context().meta
    auth = Authsome(profile=meta.get("authsome.profile") or "default", store_url=meta.get("authsome.store"))
    # A home of the authsome package: imported once, the notice on stderr (never from inside a run: no store there).
    for report in [] if auth.env.get("AUTHSOME_RUN") else auth.import_authsome_home():
        click.echo("\n".join(report.lines()), err=True)
    return auth


connection_option = click.option(
    "--connection", "-c", default="default", show_default=True, metavar="NAME", help="Named connection of the provider."
)


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="authsome", message="authsome %(version)s")
def cli() -> None:
    """authsome: one encrypted store for your agents' API credentials, injected by a local proxy."""


@cli.command("list")
@common_options
def list_cmd() -> None:
    """Every known provider and its state (available / configured / connected)."""
    o = out()
    rows = api().list()

    def human() -> None:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for col in ("provider", "type", "state", "connections"):
            table.add_column(col)
        for row in rows:
            conns = ", ".join(
                f"{c.name} ({c.status}{', ' + relative_expiry(c.expires_at) if c.expires_at else ''})"
                for c in row.connections
            )
            style = {"connected": "green", "configured": "yellow"}.get(row.state, "dim")
            table.add_row(row.name, row.auth_type, f"[{style}]{row.state}[/]", conns)
        o.console().print(table)

    o.emit({"providers": [r.to_dict() for r in rows]}, human)


@cli.command()
@click.argument("provider")
@connection_option
@click.option("--field", metavar="NAME", help="Print one field (a secret needs --show-secret).")
@click.option("--show-secret", is_flag=True, help="Allow --field to print a secret value.")
@common_options
def get(provider: str, connection: str, field: str | None, show_secret: bool) -> None:
    """A connection's metadata; secrets stay redacted unless asked for with --field NAME --show-secret."""
    o = out()
    auth = api()
    if show_secret:
        auth.refuse_inside_run("reveal a secret")  # before the store is touched: the same answer in a sandbox
    info = auth.get(provider, connection)
    data = info.redacted()
    if field is None:

        def human() -> None:
            for key, value in flatten(data):
                if value in (None, "", [], {}):
                    continue
                if key in ("created_at", "updated_at"):
                    value = iso_time(value)
                elif key == "expires_at":
                    value = f"{iso_time(value)} ({relative_expiry(value)})"
                click.echo(f"{key}: {plain(value)}")
            click.echo("secret: *** (use --field api_key|access_token --show-secret)")

        o.emit(data, human)
        return
    from authsome.api import REVEALABLE_FIELDS

    if field in REVEALABLE_FIELDS or field in ("refresh_token", "id_token", "client_secret"):
        if not show_secret:
            raise UsageError(f"{field} is a secret", "add --show-secret to print it")
        value: Any = auth.reveal(provider, connection, field).reveal()
    elif field in data:
        value = data[field]
    else:
        raise UsageError(f"unknown field {field!r}", "fields: " + ", ".join([*data, *REVEALABLE_FIELDS]))
    o.emit({field: value}, lambda: click.echo(value if not isinstance(value, (list, tuple)) else " ".join(value)))


@cli.command()
@click.argument("provider")
@common_options
def inspect(provider: str) -> None:
    """A provider's definition (hosts, headers, flow) and this profile's connections to it."""
    o = out()
    auth = api()
    prov = auth.provider(provider)
    conns = [c.redacted() for c in auth.store.connections(provider)]
    routes = [rule.raw for rule in prov.host_rules]  # as used: base URL applied, authsome's broad regexes narrowed
    data = {"provider": prov.to_dict(), "source": prov.source, "routes": routes, "connections": conns}

    def human() -> None:
        for key, value in flatten(prov.to_dict()):
            click.echo(f"{key}: {plain(value)}")
        click.echo("routes: " + (", ".join(routes) or "none"))
        click.echo(f"source: {prov.source}" + (f" ({prov.path})" if prov.path else ""))
        click.echo("connections: " + (", ".join(f"{c['connection']} ({c['status']})" for c in conns) or "none"))

    o.emit(data, human)


@cli.command()
@click.argument("provider")
@connection_option
@click.option("--force", is_flag=True, help="Replace an existing connection.")
@click.option("--flow", type=click.Choice(["pkce", "device_code", "dcr_pkce", "api_key"]), help="Override the flow.")
@click.option("--scopes", metavar="A,B", help="Comma-separated scopes to request.")
@click.option("--client-id", metavar="ID", help="OAuth client id (the secret is never taken from the command line).")
@click.option("--base-url", metavar="URL", help="Base URL of a self-hosted instance.")
@click.option("--reset", is_flag=True, help="Ask for the OAuth client credentials again.")
@click.option("--no-browser", is_flag=True, help="Print URLs instead of opening a browser.")
@click.option(
    "--browser", is_flag=True, help="Ask for the API key or client secret in a local browser form (also without a TTY)."
)
@click.option(
    "--redirect-port",
    type=int,
    metavar="PORT",
    help="Loopback port for the OAuth redirect (default 7999; 0 = any free port).",
)
@common_options
def login(
    provider: str,
    connection: str,
    force: bool,
    flow: str | None,
    scopes: str | None,
    client_id: str | None,
    base_url: str | None,
    reset: bool,
    no_browser: bool,
    browser: bool,
    redirect_port: int | None,
) -> None:
    """Log in once: an API key (env var, stdin, masked prompt or local browser form) or an OAuth flow."""
    from authsome.api import LoginOptions
    from authsome.cli.ui import ConsoleUI

    o = out()
    opts = LoginOptions(
        connection=connection,
        force=force,
        flow=flow,
        client_id=client_id,
        base_url=base_url,
        reset=reset,
        no_browser=no_browser,
        browser=browser,
        redirect_port=redirect_port,
        scopes=[s.strip() for s in scopes.split(",") if s.strip()] if scopes else None,
    )
    info = api().login(provider, opts, ui=ConsoleUI(o))
    o.emit(
        info.redacted(),
        lambda: o.console().print(
            f"[green]✓[/] {provider}/{connection} connected" + (f" as {info.account}" if info.account else "")
        ),
    )


@cli.command()
@click.argument("provider")
@connection_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["env", "shell", "json"]),
    help="Output format (default: env, or json with --json).",
)
@click.option("--prefix", default="", metavar="PREFIX", help="Prefix for every variable name.")
@common_options
def export(provider: str, connection: str, fmt: str | None, prefix: str) -> None:
    """Print the credential as environment variables, for tools that cannot use the proxy."""
    if out().json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} ask for two formats", "drop one of them")
    chosen = fmt or ("json" if out().json else "env")
    click.echo(api().export(provider, connection, chosen, prefix))  # type: ignore[arg-type]


@cli.command()
@click.argument("provider")
@connection_option
@common_options
def logout(provider: str, connection: str) -> None:
    """Log out of one connection (revoked at the provider when it supports that)."""
    o = out()
    api().logout(provider, connection)
    o.emit(
        {"provider": provider, "connection": connection, "logged_out": True},
        lambda: o.console().print(f"{provider}/{connection} logged out"),
    )


@cli.command()
@click.argument("provider")
@common_options
def revoke(provider: str) -> None:
    """Revoke every connection of a provider remotely (where supported), then delete them locally."""
    o = out()
    result = api().revoke(provider)

    def human() -> None:
        remote = result["revoked_remotely"]
        revoked = [name for name in result["removed"] if remote.get(name)]
        local_only = [name for name in result["removed"] if not remote.get(name)]
        if revoked:
            o.console().print(f"{provider}: revoked at the provider: {', '.join(revoked)}")
        if local_only:
            o.console().print(f"{provider}: nothing revoked remotely (no revocation endpoint): {', '.join(local_only)}")
        o.console().print(f"{provider}: removed locally: {', '.join(result['removed'])}")

    o.emit(result, human)


@cli.command()
@click.argument("provider")
@click.option("--connection", "-c", default=None, metavar="NAME", help="Only this connection.")
@common_options
def remove(provider: str, connection: str | None) -> None:
    """Delete local state only (never contacts the provider); also uninstalls a user provider file."""
    o = out()
    result = api().remove(provider, connection)

    def human() -> None:
        count = result["connections_removed"]
        what = [f"connection {connection}" if connection else f"{count} connection{'s' if count != 1 else ''}"]
        what += ["the OAuth client"] * bool(result["client_removed"])
        what += ["the user provider file"] * bool(result["uninstalled"])
        if not count:
            what.pop(0)
        o.console().print(f"{provider}: removed {', '.join(what)} (locally; the provider was not contacted)")

    o.emit(result, human)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace a user provider of the same name.")
@common_options
def register(file: Path, force: bool) -> None:
    """Install a custom provider from a JSON or JSONC file, in this project's or authsome's format (overrides a
    bundled one of the same name); notes say what of the file is not used as written."""
    o = out()
    prov = api().register(file, force=force)

    def human() -> None:
        console = o.console()
        console.print(f"registered provider {prov.name}")
        for note in prov.notes:
            console.print(f"note: {note}", markup=False)

    o.emit({"registered": prov.name, "path": str(prov.path), "notes": list(prov.notes)}, human)


@cli.command()
@common_options
def whoami() -> None:
    """Home, profile and where the master key is kept."""
    o = out()
    data = api().whoami()

    def human() -> None:
        for key, value in data.items():
            click.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")

    o.emit(data, human)


@cli.command()
@common_options
def doctor() -> None:
    """Check the home, key source, store, provider files, proxy CA, sandbox and gateway."""
    o = out()
    from authsome.api import Authsome
    from authsome.doctor import run_checks

    meta = click.get_current_context().meta
    profile = meta.get("authsome.profile") or "default"
    auth = Authsome(profile=profile, read_only=True, store_url=meta.get("authsome.store"))
    checks = run_checks(auth)  # doctor only reads: no home, key or import made

    def human() -> None:
        for c in checks:
            mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
            o.console().print(f"{mark} {c.name}: {c.detail}" + (f"\n      fix: {c.hint}" if c.hint else ""))

    o.emit({"ok": all(c.ok for c in checks), "checks": [c.to_dict() for c in checks]}, human)
    if not all(c.ok for c in checks):
        sys.exit(1)


@cli.command("log")
@click.option("--run", "run_id", metavar="ID", help="Only records of one `authsome run`.")
@click.option("--agent", metavar="NAME", help="Only records about one agent of `authsome gateway`.")
@click.option("--provider", "-p", metavar="NAME", help="Only records about one provider.")
@click.option("--since", metavar="AGE", help="Only records newer than AGE (e.g. 30s, 15m, 1h, 2d, 1w).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records as they arrive.")
@click.option("--verify", is_flag=True, help="Check that no record was edited, reordered or deleted.")
@common_options
def log_cmd(
    run_id: str | None, agent: str | None, provider: str | None, since: str | None, follow: bool, verify: bool
) -> None:
    """The audit trail: proxied requests, logins, exports, secret reveals and refreshes (never a secret)."""
    import time

    o = out()
    auth = api()
    if verify:
        result = auth.verify_log()
        o.emit(
            result.to_dict(),
            lambda: click.echo(
                f"ok: {result.records} records, chain intact" if result.ok else f"TAMPERED: {result.problem}"
            ),
        )
        sys.exit(0 if result.ok else 1)
    cutoff = time.time() - parse_duration(since, "--since", "an age", zero=True) if since else None
    records = auth.log(run_id=run_id, provider=provider, since=cutoff, agent=agent)
    if not follow:

        def human() -> None:
            for record in records:
                click.echo(_format_record(record))

        o.emit({"records": records}, human)
        return
    seen = records[-1]["seq"] if records else 0
    for record in records:
        click.echo(json.dumps(record, sort_keys=True) if o.json else _format_record(record))
    while True:  # -f: poll for records appended by other processes
        time.sleep(0.5)
        for record in auth.log(run_id=run_id, provider=provider, since=cutoff, agent=agent):
            if record["seq"] > seen:
                seen = record["seq"]
                click.echo(json.dumps(record, sort_keys=True) if o.json else _format_record(record), nl=True)


def _format_record(record: dict[str, Any]) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(record.get("ts", 0)).strftime("%Y-%m-%d %H:%M:%S")
    skip = {"seq", "ts", "event", "prev", "mac"}
    rest = " ".join(f"{k}={v}" for k, v in sorted(record.items()) if k not in skip and v not in (None, "", [], {}))
    return f"{when} #{record.get('seq')} {record.get('event')} {rest}"


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--provider",
    "-p",
    "providers",
    multiple=True,
    metavar="NAME",
    help="Only inject these providers (default: every connected one).",
)
@click.option(
    "--connection",
    "-c",
    "connections",
    multiple=True,
    metavar="PROVIDER=NAME",
    help="Use a non-default connection of a provider.",
)
@click.option(
    "--upstream-ca",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Extra CA bundle to trust for upstream servers.",
)
@policy_options
@click.option(
    "--upstream",
    "upstream_proxy",
    metavar="URL",
    help="Chain through this proxy (default: the HTTPS_PROXY already set, if any).",
)
@click.option("--allow-nested", is_flag=True, help="Allow running inside another `authsome run`.")
@click.option(
    "--no-isolate",
    is_flag=True,
    help="Run COMMAND as a plain child process, able to read the store (default: sandboxed, Linux).",
)
@click.option(
    "--no-gateway",
    is_flag=True,
    help="Start a proxy for this run even when a gateway is running (default: the gateway serves the run).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@common_options
def run(
    providers: tuple[str, ...],
    connections: tuple[str, ...],
    upstream_ca: Path | None,
    allow: tuple[str, ...],
    policy_file: Path | None,
    upstream_proxy: str | None,
    allow_nested: bool,
    no_isolate: bool,
    no_gateway: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND behind a local proxy that injects credentials; exits with COMMAND's exit code.

    Example: authsome run -- python my_agent.py
    """
    pairs = dict(connection_pairs(connections))
    o = out()
    code = api().run(
        list(command),
        providers=providers,
        connections=pairs,
        verbose=o.verbose,
        upstream_ca=upstream_ca,
        allow_nested=allow_nested,
        allow=allow,
        policy_file=policy_file,
        upstream_proxy=upstream_proxy,
        isolate=not no_isolate,
        use_gateway=not no_gateway,
    )
    exit_now(code)  # the child's exit code is known and the audit trail flushed: no interpreter teardown


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI and turn every error into one message (JSON with ``--json``) and its exit code.

    ``--json`` and ``--verbose`` are read from what click parsed, so an argument meant for the child of ``run`` never
    changes how authsome reports its own errors; only when parsing failed before ``--json`` was reached is the command
    line searched for it (up to ``--``, and not for ``run``, whose trailing arguments belong to the child).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    flags: dict[str, Any] = {}
    try:
        try:
            with cli.make_context("authsome", args) as ctx:
                flags = ctx.meta  # shared with every subcommand's context; the flag callbacks fill it
                cli.invoke(ctx)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `authsome`: the help text, exit 2
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            ctx_name = exc.ctx.info_name if isinstance(exc, click.UsageError) and exc.ctx is not None else None
            if "authsome.json" not in flags and ctx_name != "run":
                flags["authsome.json"] = "--json" in (args[: args.index("--")] if "--" in args else args)
            raise _from_click(exc) from None
        except (click.exceptions.Abort, KeyboardInterrupt, EOFError):
            raise AuthsomeError("interrupted", exit_code=130) from None
    except AuthsomeError as exc:
        _fail(exc, flags)
    except Exception as exc:  # a bug: say so without echoing a message that might hold a value
        _fail(AuthsomeError(f"unexpected {type(exc).__name__}", "run again with --verbose and report it"), flags)
    sys.exit(0)


def _from_click(exc: click.ClickException) -> AuthsomeError:
    """A click parsing error as one line in authsome's error shape, with the command's --help as the hint."""
    text = " ".join(exc.format_message().split()).rstrip(".")
    message = text[:1].lower() + text[1:]
    if isinstance(exc, click.UsageError):
        path = exc.ctx.command_path if exc.ctx is not None else "authsome"
        return UsageError(message, f"run `{path} --help`")
    return AuthsomeError(message, exit_code=exc.exit_code)


def _fail(exc: AuthsomeError, flags: dict[str, Any]) -> NoReturn:
    """Print ``exc`` once, in the output mode chosen (a traceback first with --verbose), and exit with its code."""
    if flags.get("authsome.verbose"):
        import traceback

        traceback.print_exc()
    Output(json=bool(flags.get("authsome.json"))).error(exc)
    sys.exit(exc.exit_code)


from authsome.cli.gateway import agent_group, gateway_group  # noqa: E402  (it uses the helpers above)

cli.add_command(agent_group)
cli.add_command(gateway_group)

from authsome.cli.store import store_group  # noqa: E402  (it uses the helpers above)

cli.add_command(store_group)
