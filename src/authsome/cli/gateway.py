"""``authsome agent …`` and ``authsome gateway …``: parse, call the api (or the gateway's process control), render."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from authsome.cli.main import api, common_options, out
from authsome.cli.options import connection_pairs, parse_duration, policy_options
from authsome.cli.output import iso_time, relative_expiry
from authsome.errors import UsageError

if TYPE_CHECKING:
    from authsome.secret import Secret
    from authsome.store.agents import Agent


def _rights_text(agent: Agent) -> str:
    rights = agent.rights
    providers = ", ".join(rights.providers) or "every connected provider"
    connections = "; ".join(f"{p}: {', '.join(n)}" for p, n in sorted(rights.connections.items()))
    text = providers + (f" (connections {connections})" if connections else "")
    if rights.allow:
        text += f"; allow: {', '.join(rights.allow)}"
    return text


def _with_token(agent: Agent, token: Secret, verb: str) -> None:
    """The agent and its token: the whole record with --json, the token alone with --quiet, else both in words."""
    o = out()
    value = token.reveal()
    if o.json:
        o.emit({**agent.to_dict(), "token": value})
        return
    if o.quiet:
        click.echo(value)
        return
    expiry = f"; {relative_expiry(agent.expires_at)}" if agent.expires_at else ""
    click.echo(f"agent {agent.name} {verb}: {_rights_text(agent)}{expiry}")
    click.echo(f"token (shown only now; the store keeps its hash): {value}")
    click.echo(f"proxy URL: http://{agent.name}:<token>@<gateway host>:<port>  (`authsome agent env {agent.name}`)")


# -- authsome agent -------------------------------------------------------------------------------------------------


agent_group: click.Group = click.Group(
    "agent", help="Agents of `authsome gateway`: each has a token (in its proxy URL) and its own rights."
)


@agent_group.command("create")
@click.argument("name")
@click.option("--provider", "-p", "providers", multiple=True, metavar="NAME", help="May use this provider (repeat).")
@click.option(
    "--connection",
    "-c",
    "connections",
    multiple=True,
    metavar="PROVIDER=NAME",
    help="May use this connection (repeat; the first of a provider is its default).",
)
@policy_options
@click.option("--expires", metavar="AGE", help="Lifetime, e.g. 8h, 30m, 7d (default: until revoked).")
@click.option("--force", is_flag=True, help="Replace an active agent of that name (its token stops working).")
@common_options
def agent_create(
    name: str,
    providers: tuple[str, ...],
    connections: tuple[str, ...],
    allow: tuple[str, ...],
    policy_file: Path | None,
    expires: str | None,
    force: bool,
) -> None:
    """Create an agent and print its token, once (default rights: every connected provider, unrestricted)."""
    agent, token = api().create_agent(
        name,
        providers=providers,
        connections=connection_pairs(connections),
        allow=allow,
        policy_file=policy_file,
        expires_in=parse_duration(expires, "--expires", "a lifetime") if expires else None,
        replace=force,
    )
    _with_token(agent, token, "created")


@agent_group.command("list")
@common_options
def agent_list() -> None:
    """Every agent, its state (active, revoked, expired) and its rights; never a token."""
    o = out()
    agents = api().agents.list()

    def human() -> None:
        if not agents:
            click.echo("no agents (create one: authsome agent create NAME --provider PROVIDER)")
        for agent in agents:
            when = f", {relative_expiry(agent.expires_at)}" if agent.expires_at else ""
            click.echo(f"{agent.name} ({agent.state()}{when}): {_rights_text(agent)}")

    o.emit({"agents": [a.to_dict() for a in agents]}, human)


@agent_group.command("revoke")
@click.argument("name")
@common_options
def agent_revoke(name: str) -> None:
    """Revoke an agent: a running gateway refuses it from its next request (within a second)."""
    o = out()
    agent = api().revoke_agent(name)
    revoked_at = agent.revoked_at or 0
    o.emit(agent.to_dict(), lambda: click.echo(f"agent {name} revoked at {iso_time(revoked_at)}"))


@agent_group.command("rotate")
@click.argument("name")
@common_options
def agent_rotate(name: str) -> None:
    """Give an agent a new token (printed once); the old one stops working within a second."""
    agent, token = api().rotate_agent(name)
    _with_token(agent, token, "has a new token")


@agent_group.command("env")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["env", "shell", "json"]), help="Default: env (json with --json).")
@click.option("--token-stdin", is_flag=True, help="Read the agent's token from stdin (else a <token> placeholder).")
@click.option("--gateway", "address", metavar="HOST:PORT", help="The gateway's address (default: its --listen).")
@click.option("--ca-path", metavar="PATH", help="Where the agent finds the CA bundle (default: its path here).")
@common_options
def agent_env(name: str, fmt: str | None, token_stdin: bool, address: str | None, ca_path: str | None) -> None:
    """What an agent needs in its environment: proxy URL with its token, CA bundle, placeholder keys.

    Example: authsome agent create bot -p openai -q | authsome agent env bot --token-stdin > bot.env
    """
    if out().json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} ask for two formats", "drop one of them")
    token = None
    if token_stdin:
        token = sys.stdin.readline().strip()
        if not token:
            raise UsageError("no token on stdin", "pipe the token `agent create` or `agent rotate` printed")
    chosen = fmt or ("json" if out().json else "env")
    text = api().agent_env(name, fmt=chosen, token=token, address=address, ca_path=ca_path)  # type: ignore[arg-type]
    click.echo(text)


# -- authsome gateway -----------------------------------------------------------------------------------------------


def _serve_options(func: Any) -> Any:
    options = [
        click.option("--listen", metavar="HOST:PORT", help="Where agents connect (default 127.0.0.1:8931)."),
        click.option(
            "--upstream-ca",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            help="Extra CA bundle to trust for upstream servers.",
        ),
        click.option("--upstream", "upstream_proxy", metavar="URL", help="Chain through this proxy."),
        click.option("--drain", default=10.0, show_default=True, metavar="SECONDS", help="Grace time on SIGTERM."),
        click.option(
            "--workers",
            type=click.IntRange(1, 256),
            default=1,
            show_default=True,
            metavar="N",
            help="Worker processes sharing the port (one core each; see docs/gateway.md).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _gateway_options(
    listen: str | None, upstream_ca: Path | None, upstream_proxy: str | None, drain: float, workers: int
) -> Any:
    from authsome.gateway.address import parse_listen
    from authsome.gateway.service import GatewayOptions

    o = out()
    store = click.get_current_context().meta.get("authsome.store")  # a worker opens the same store
    return GatewayOptions(
        listen=parse_listen(listen or ""),
        json_log=o.json,
        verbose=o.verbose,
        upstream_ca=upstream_ca,
        upstream_proxy=upstream_proxy,
        drain_timeout=float(drain),
        workers=workers,
        worker_args=("--store", store) if store else (),
    )


gateway_group: click.Group = click.Group(
    "gateway",
    help="One long-running proxy for many agents (containers, sandboxes, other hosts), each with its own rights.",
)


@gateway_group.command("serve")
@_serve_options
@common_options
def gateway_serve(
    listen: str | None, upstream_ca: Path | None, upstream_proxy: str | None, drain: float, workers: int
) -> None:
    """Run the gateway in the foreground (one log line per decision; JSON lines with --json) until SIGTERM."""
    from authsome.cli import exit_now

    code = api().serve_gateway(_gateway_options(listen, upstream_ca, upstream_proxy, drain, workers))
    exit_now(code)


@gateway_group.command("worker", hidden=True)
@click.option("--fds", required=True, metavar="LISTEN,CHANNEL", help="Inherited descriptors.")
@click.option("--index", type=int, required=True, help="The worker's number.")
@common_options
def gateway_worker(fds: str, index: int) -> None:
    """One worker process of `gateway serve --workers N`, started by the gateway itself (its options come from it)."""
    from authsome.cli import exit_now
    from authsome.gateway.service import GatewayOptions
    from authsome.gateway.worker import WorkerLink

    listen_fd, _, channel_fd = fds.partition(",")
    if not (listen_fd.isdigit() and channel_fd.isdigit()):
        raise UsageError(f"--fds {fds!r} is not LISTEN,CHANNEL", "workers are started by `authsome gateway serve`")
    link = WorkerLink(int(listen_fd), int(channel_fd), index)
    exit_now(api().serve_gateway(GatewayOptions(worker=link)))


@gateway_group.command("ca")
@click.option("--bundle", is_flag=True, help="The system CAs and the gateway's CA: what an agent should trust.")
@common_options
def gateway_ca(bundle: bool) -> None:
    """Print the gateway's CA certificate (PEM; public), for agents to trust."""
    from authsome.proxy import ca

    pem = ca.ensure_ca()
    if bundle:
        from authsome.gateway import state

        files = api().gateway_files.ensure()
        pem = state.write_bundle(files.bundle, pem, api().env).read_bytes()
    click.echo(pem.decode().rstrip("\n"))


@gateway_group.command("start")
@_serve_options
@common_options
def gateway_start(
    listen: str | None, upstream_ca: Path | None, upstream_proxy: str | None, drain: float, workers: int
) -> None:
    """Start the gateway in the background (its lines go to gateway.log under the profile); returns once it listens."""
    from authsome.gateway import control

    o = out()
    auth = api()
    _check_serve_options(listen, upstream_proxy, auth.env)
    args = ["--profile", auth.profile, "gateway", "serve", "--drain", str(drain)]
    args += ["--listen", listen] if listen else []
    args += ["--upstream-ca", str(upstream_ca.resolve())] if upstream_ca else []
    args += ["--upstream", upstream_proxy] if upstream_proxy else []
    args += ["--json"] if o.json else []
    args += ["--workers", str(workers)] if workers > 1 else []
    state = control.start(auth.gateway_files, args, auth.env)
    o.emit(
        state,
        lambda: click.echo(f"gateway started: {state['listen']} (pid {state['pid']}; log {auth.gateway_files.log})"),
    )


def _check_serve_options(listen: str | None, upstream: str | None, env: Mapping[str, str]) -> None:
    """What ``gateway serve`` would refuse, refused here (exit 2) rather than by the background process."""
    if listen:
        from authsome.gateway.address import parse_listen

        parse_listen(listen)
    if upstream:
        from authsome.proxy.runner import upstream_proxy

        upstream_proxy(upstream, env)


@gateway_group.command("stop")
@click.option("--timeout", default=30.0, show_default=True, metavar="SECONDS", help="Then SIGKILL.")
@common_options
def gateway_stop(timeout: float) -> None:
    """Stop the background gateway: requests under way finish first (SIGTERM)."""
    from authsome.gateway import control

    o = out()
    result = control.stop(api().gateway_files, timeout)

    def human() -> None:
        if not result["stopped"]:
            click.echo("no gateway is running")
        else:
            click.echo(f"gateway stopped (pid {result['pid']}{', killed' if result['killed'] else ''})")

    o.emit(result, human)


@gateway_group.command("status")
@common_options
def gateway_status() -> None:
    """Whether the gateway runs, where, and whether it answers its health check (exit 1 when not running)."""
    from authsome.gateway import control

    o = out()
    result = control.status(api().gateway_files)

    def human() -> None:
        if not result["running"]:
            click.echo("no gateway is running")
            return
        health = "healthy" if result["healthy"] else "NOT answering /healthz"
        click.echo(
            f"gateway running on {result['listen']} (pid {result['pid']}, profile {result['profile']}): {health}"
        )

    o.emit(result, human)
    if not result["running"]:
        sys.exit(1)
