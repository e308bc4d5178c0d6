"""``authsome run``: build the router, start the proxy, spawn the child, forward signals, return its exit code.

Every temporary file (the CA bundles) lives in one private directory that is removed on every exit path, including
signals. mitmproxy is imported only inside :func:`run_command`, after the configuration has been validated.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from authsome import isolation
from authsome.errors import AuthsomeError, UsageError
from authsome.isolation import SandboxedChild
from authsome.policy import Policy
from authsome.providers.hosts import split_host_port
from authsome.proxy import ca, environment
from authsome.proxy import trust as run_trust
from authsome.proxy.report import Audit, Reporter
from authsome.proxy.routing import Route, Router

if TYPE_CHECKING:
    from authsome.proxy.relay import UpstreamProxy
    from authsome.proxy.server import ProxyServer

__all__ = ["GatewayRun", "Route", "RunConfig", "parse_resolve", "run_command"]

PROXY_USER = "authsome"
STOP_CHILD_TIMEOUT = 3.0  # seconds a child gets after SIGTERM when its proxy could not start
RUN_DIR_PREFIX = "authsome-run-"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
Address = tuple[str, int]
HeadersFor = Callable[[str, str], Mapping[str, str]]
Stream = int | IO[Any] | None


@dataclass
class RunConfig:
    """Everything one ``authsome run`` needs; the api layer fills it in.

    ``headers_for(provider, connection)`` returns the headers to inject; it may block (token refresh) and raises
    :class:`~authsome.errors.AuthsomeError` when there is no usable credential (the child then gets a JSON error).
    ``resolve`` maps ``"host:port"`` to ``"addr:port"`` for the proxy's upstream sockets (test stand-ins); the
    ``AUTHSOME_TEST_RESOLVE`` variable of ``env`` adds to it. ``env`` is the parent environment (default
    ``os.environ``); ``stdin``/``stdout``/``stderr`` are passed to the child as :class:`subprocess.Popen` takes them.
    ``credential_ttl`` is how long (seconds) the headers of one provider/connection are reused before
    ``headers_for`` is asked again (0: every request asks). ``audit`` gets one dict per request (no secrets):
    ``run_id`` (``run_id`` or a random 12-hex id), ``command`` (the program name only), ``decision``, ``method``,
    ``host``, ``port``, ``path`` (no query), ``provider``, ``connection``, ``reason``, ``status``, ``duration_ms``.
    ``isolate`` starts the child where it cannot see ``hide`` (the authsome home) nor the CA directory, nor any
    process outside its sandbox (Linux; see :mod:`authsome.isolation`); False runs it as a plain child process.
    ``gateway``: a running gateway serves the child (no proxy starts here, ``routes`` only name its placeholders).
    """

    command: Sequence[str]
    routes: Sequence[Route]
    headers_for: HeadersFor
    verbose: bool = False
    upstream_ca: Path | None = None
    allow_nested: bool = False
    confdir: Path | None = None
    policy: Policy | None = None
    audit: Audit | None = None
    upstream_proxy: str | None = None
    env: Mapping[str, str] | None = None
    resolve: Mapping[str, str] | None = None
    credential_ttl: float = 2.0
    run_id: str | None = None
    stdin: Stream = None
    stdout: Stream = None
    stderr: Stream = None
    isolate: bool = True
    hide: Sequence[Path] = ()
    gateway: GatewayRun | None = None


class GatewayRun(Protocol):
    """The running gateway's agent for one run (:class:`authsome.gateway.client.RunLease`): the child's proxy URL
    (the agent's name and token in it) and the CA the gateway signs with. ``begin`` gives the gateway the run's audit
    context and has the run's lines (warnings; decision lines with ``--verbose``) shown by ``reporter``; ``close``
    ends the agent, and returns once the gateway refuses its token."""

    @property
    def url(self) -> str: ...

    @property
    def ca_cert(self) -> Path: ...

    @property
    def upstream(self) -> str | None:
        """The proxy the gateway chains through (``scheme://host:port``), or None."""
        ...

    def begin(self, context: Mapping[str, object], reporter: Reporter) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Plan:
    """A validated run: everything is known before the proxy starts."""

    command: list[str]
    parent: dict[str, str]
    router: Router
    resolve: dict[Address, Address]
    upstream: tuple[str, str | None] | None
    confdir: Path
    reporter: Reporter


def run_command(config: RunConfig) -> int:
    """Run ``config.command`` behind the proxy and return its exit code.

    128+N if the child died of signal N, 127 if the command is not found, 126 if it cannot be executed. Raises
    :class:`~authsome.errors.AuthsomeError` (and never starts the child) for bad configuration or a proxy that
    cannot start.
    """
    try:
        plan = _plan(config)
        if isinstance(plan, int):
            return plan
        with _SignalRelay() as relay, _private_tempdir() as tmp:
            try:
                if config.gateway is not None and _gateway_serves(config, config.gateway, plan):
                    return _run_through_gateway(config, config.gateway, plan, relay, tmp)
                return _serve_and_run(config, plan, relay, tmp)
            finally:
                plan.reporter.close()
    finally:
        if config.gateway is not None:
            config.gateway.close()  # however the run ends: the gateway refuses the agent from now on


def _gateway_serves(config: RunConfig, gateway: GatewayRun, plan: _Plan) -> bool:
    """Whether the gateway serves this run as its own proxy would; if not, the run says why (``--verbose``), ends
    the agent and starts its own proxy. It would not inside another run, with ``--upstream-ca`` (a CA the gateway
    may not trust), with a chained proxy other than the gateway's (``--upstream``, the run's ``HTTPS_PROXY``), or
    with another CA directory."""
    why = None
    chained = plan.upstream[0] if plan.upstream else None
    if plan.parent.get(environment.RUN_MARKER):
        why = "it runs inside another run, whose proxy it chains through"
    elif config.upstream_ca is not None:
        why = "--upstream-ca names a CA for this run only"
    elif chained != gateway.upstream:
        why = f"this run chains through {chained or 'no proxy'}, the gateway through {gateway.upstream or 'none'}"
    elif config.confdir is not None and config.confdir.expanduser() != gateway.ca_cert.parent:
        why = f"this run's CA is in {config.confdir}, the gateway's in {gateway.ca_cert.parent}"
    if why is None:
        return True
    plan.reporter.info(f"not served by the gateway ({why}): starting this run's own proxy")
    gateway.close()
    return False


def _run_through_gateway(config: RunConfig, gateway: GatewayRun, plan: _Plan, relay: _SignalRelay, tmp: Path) -> int:
    """The child, served by the running gateway: the same environment, sandbox, lines and audit context; no proxy
    started here."""
    parent, reporter, routes = plan.parent, plan.reporter, plan.router.routes
    gateway.begin(reporter.context, reporter)
    where = gateway.url.rpartition("@")[2]  # never the agent's token
    named = ", ".join(f"{r.provider.name}/{r.connection}" for r in routes) or "none"
    reporter.info(
        f"run {reporter.context['run_id']}: served by the gateway on {where}, CA {gateway.ca_cert}, routes: {named}"
    )
    sandbox = _start_sandbox(config, gateway.ca_cert.parent, tmp, parent)
    try:
        trusted = run_trust.prepare(run_trust.cache_dir(parent), gateway.ca_cert.read_bytes(), parent, scratch=tmp)
        try:
            env = environment.child_env(
                parent,
                url=gateway.url,
                bundle=trusted.bundle,
                cert_dir=trusted.cert_dir,
                node_bundle=trusted.node_bundle,
                providers=[r.provider for r in routes],
            )
            if relay.pending is not None:
                return 128 + relay.pending
            return _run_child(plan.command, env, relay, config, sandbox)
        finally:
            trusted.close()
    finally:
        if sandbox is not None:
            sandbox.cancel()


def _plan(config: RunConfig) -> _Plan | int:
    """Validate the configuration; an exit code instead when the command obviously cannot run."""
    parent = dict(os.environ if config.env is None else config.env)
    if parent.get(environment.RUN_MARKER) and not config.allow_nested:
        raise UsageError(
            "already inside `authsome run`",
            "the outer run injects credentials already; pass --allow-nested to start another proxy anyway",
        )
    command = list(config.command)
    if not command:
        raise UsageError("no command to run", "put it after --, e.g. authsome run -- python agent.py")
    router = Router(config.routes)
    resolve = parse_resolve(parent.get(environment.TEST_RESOLVE_VAR, ""))
    resolve.update(parse_resolve(",".join(f"{k}={v}" for k, v in (config.resolve or {}).items())))
    upstream = upstream_proxy(config.upstream_proxy, parent)
    if config.upstream_ca is not None and not config.upstream_ca.is_file():
        raise UsageError(f"--upstream-ca {config.upstream_ca} is not a file", "name a PEM bundle of CA certificates")
    problem = _not_runnable(command[0], parent.get("PATH", os.defpath))
    if problem is not None:
        code, why = problem
        sys.stderr.write(f"authsome: {command[0]}: {why}\n")
        return code
    program = os.path.basename(command[0])  # never the arguments: they may hold secrets
    context: dict[str, object] = {"run_id": config.run_id or secrets.token_hex(6), "command": program}
    reporter = Reporter(verbose=config.verbose, audit=config.audit, context=context)
    for name in router.unroutable():
        reporter.info(f"provider {name} has no host_url: its requests get no credential")
    confdir = (config.confdir or ca.default_confdir()).expanduser()
    return _Plan(command, parent, router, resolve, upstream, confdir, reporter)


def _serve_and_run(config: RunConfig, plan: _Plan, relay: _SignalRelay, tmp: Path) -> int:
    parent = plan.parent
    nested = bool(parent.get(environment.RUN_MARKER))  # then the outer run, with this same CA, is our upstream
    confdir = plan.confdir
    if nested and not os.access(confdir, os.R_OK | os.X_OK):  # inside an isolated run the CA's key is hidden
        confdir = tmp / "ca"
    ca_cert = ca.ca_cert_path(confdir)
    ca_pem = ca.ensure_ca(confdir)  # a missing CA is made here, once for all the runs started together
    sandbox = _start_sandbox(config, confdir, tmp, parent)
    try:
        return _serve(config, plan, relay, tmp, confdir, ca_cert, ca_pem, sandbox)
    finally:
        if sandbox is not None:
            sandbox.cancel()  # no-op once the command was started


def _serve(
    config: RunConfig,
    plan: _Plan,
    relay: _SignalRelay,
    tmp: Path,
    confdir: Path,
    ca_cert: Path,
    ca_pem: bytes,
    sandbox: SandboxedChild | None,
) -> int:
    from authsome.proxy.auth import Principal, ProxyAuth, RunCredential
    from authsome.proxy.relay import FrontDoor
    from authsome.proxy.server import ProxyServer, ServerOptions

    parent, router, reporter, upstream = plan.parent, plan.router, plan.reporter, plan.upstream
    nested = bool(parent.get(environment.RUN_MARKER))
    trusted = run_trust.prepare(  # cached between runs; the proxy's upstream trust where the child cannot write
        run_trust.cache_dir(parent),
        ca_pem,
        parent,
        upstream_ca=config.upstream_ca,
        nested=nested,
        scratch=tmp,
        private=confdir / "authsome-upstream",
    )
    trust = trusted.upstream
    token = secrets.token_urlsafe(24)
    credential = RunCredential(PROXY_USER, token, Principal(None, router, config.policy or Policy()))
    log = reporter.info if config.verbose else None

    def addons() -> list[object]:
        """Made on the proxy's thread once mitmproxy is imported there. Order matters within each hook:
        authentication first; the injector strips Proxy-* headers before the tunnel addon adds the chained proxy's
        own credentials to plain-HTTP requests."""
        from authsome.proxy.addon import Injector
        from authsome.proxy.onboarding import LazyOnboarding
        from authsome.proxy.tunnel import Targets, Tunnels

        targets = Targets()
        injector = Injector(
            router, config.headers_for, targets, reporter, policy=config.policy, credential_ttl=config.credential_ttl
        )
        tunnels = Tunnels(targets, upstream_auth=upstream[1] if upstream else None)
        return [ProxyAuth(credential), injector, tunnels, LazyOnboarding()]

    # The front door's socket is bound first: the child gets its port at once and starts while mitmproxy is imported
    # and started on the proxy's thread; its first connections wait in the kernel's queue until the proxy serves them.
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    # Accepted sockets inherit it: without it, small writes on the connections handed to mitmproxy wait for delayed
    # ACKs (about 40 ms a request; benchmarks/proxy_bench.py showed keep-alive falling from ~900 to ~90 req/s).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = int(listener.getsockname()[1])
    front = FrontDoor(router, credential, upstream=front_upstream(upstream, trust), log=log, reporter=reporter)
    options = ServerOptions(
        confdir, trust, upstream[0] if upstream else None, config.verbose, plan.resolve, listener=listener
    )
    server = ProxyServer(options, addons, front)
    try:
        server.start_in_background()
        env = environment.child_env(
            parent,
            url=environment.proxy_url(port, token, PROXY_USER),
            bundle=trusted.bundle,
            cert_dir=trusted.cert_dir,
            node_bundle=trusted.node_bundle,
            providers=[r.provider for r in router.routes],
        )
        routes = ", ".join(f"{r.provider.name}/{r.connection}" for r in router.routes) or "none"
        reporter.info(f"run {reporter.context['run_id']}: proxy on 127.0.0.1:{port}, CA {ca_cert}, routes: {routes}")
        if relay.pending is not None:
            return 128 + relay.pending
        return _run_child(plan.command, env, relay, config, sandbox, server)
    finally:
        server.stop(wait=server.ready.is_set())  # a start still under way is not waited for: nobody is left to use it
        trusted.close()


def front_upstream(upstream: tuple[str, str | None] | None, trust: Path) -> UpstreamProxy | None:
    """The chained proxy as the front door needs it (it opens the unrouted tunnels itself)."""
    if upstream is None:
        return None
    scheme, _, authority = upstream[0].partition("://")  # as upstream_proxy() wrote it
    tls = ssl.create_default_context(cafile=str(trust)) if scheme == "https" else None
    from authsome.proxy.relay import UpstreamProxy

    return UpstreamProxy(scheme, split_host_port(authority, None), upstream[1], tls)


def _start_sandbox(config: RunConfig, confdir: Path, tmp: Path, parent: Mapping[str, str]) -> SandboxedChild | None:
    """The child's sandbox, started before the proxy so that both get ready at once; None when not isolating.

    Hidden from the child: the authsome home and the CA's directory (made first, so that it exists to be covered).
    Read-only for it: the run's directory and the trust cache, which the proxy itself reads (its upstream trust).
    """
    if not (config.isolate and isolation.supported_platform()):
        why = "--no-isolate" if not config.isolate else "process isolation is not available on this platform"
        sys.stderr.write(f"authsome: warning: {why}: the child can read the store and the proxy CA's key\n")
        return None
    cache = run_trust.cache_dir(parent)
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SandboxedChild(
        [*config.hide, confdir], [tmp, cache], stdin=config.stdin, stdout=config.stdout, stderr=config.stderr
    )


def _run_child(
    command: list[str],
    env: dict[str, str],
    relay: _SignalRelay,
    config: RunConfig,
    sandbox: SandboxedChild | None,
    proxy: ProxyServer | None = None,
) -> int:
    if sandbox is not None:
        child = sandbox.start(command, env)
    else:
        try:
            child = subprocess.Popen(
                command,
                env=env,
                stdin=config.stdin,
                stdout=config.stdout,
                stderr=config.stderr,
                preexec_fn=isolation.die_with_parent if isolation.supported_platform() else None,
            )
        except FileNotFoundError:
            sys.stderr.write(f"authsome: {command[0]}: command not found\n")
            return 127
        except OSError as exc:
            sys.stderr.write(f"authsome: {command[0]}: {exc.strerror or 'cannot execute'}\n")
            return 126
    relay.child = child
    if relay.pending is not None:  # a signal arrived while the child was starting
        relay.forward(relay.pending)
    if proxy is not None:
        _proxy_started(proxy, child)
    code = child.wait()
    return 128 - code if code < 0 else code


def _proxy_started(proxy: ProxyServer, child: subprocess.Popen[bytes]) -> None:
    """Wait until the proxy listens or the child ends, whichever comes first. A proxy that could not start ends the
    child (it would only meet refused connections) and raises its reason."""
    while not proxy.ready.wait(0.005):
        if child.poll() is not None:
            return
    try:
        proxy.wait_ready()
    except AuthsomeError:
        child.terminate()
        try:
            child.wait(STOP_CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def _not_runnable(program: str, path: str) -> tuple[int, str] | None:
    """(exit code, reason) when ``program`` obviously cannot run, checked before the proxy starts."""
    if os.sep not in program:
        found = shutil.which(program, path=path)
        if found is None:
            return 127, "command not found"
        program = found
    if not os.path.exists(program):
        return 127, "no such file or directory"
    if os.path.isdir(program):
        return 126, "is a directory"
    if not os.access(program, os.X_OK):
        return 126, "permission denied"
    return None


def parse_resolve(text: str) -> dict[Address, Address]:
    """``host:port=addr:port,...`` (``AUTHSOME_TEST_RESOLVE``) as {(canonical host, port): (addr, port)}."""
    out: dict[Address, Address] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        source, _, dest = item.partition("=")
        try:
            out[split_host_port(source, None)] = split_host_port(dest, None)
        except ValueError as exc:
            raise UsageError(f"resolve entry {item!r} is malformed: {exc}", "write host:port=address:port") from None
    return out


def upstream_proxy(explicit: str | None, parent: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The proxy to chain through, as (``scheme://host:port``, ``user:password`` or None).

    ``explicit`` (``--upstream``) wins; otherwise the parent's ``https_proxy``/``HTTPS_PROXY`` (then ``http_proxy``/
    ``HTTP_PROXY``). An inherited value that mitmproxy cannot chain through (e.g. ``socks5://``) is ignored.
    """
    url = explicit
    if url is None:
        url = next((parent[n] for n in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY") if parent.get(n)), "")
        if not url:
            return None
        if "://" not in url:
            url = "http://" + url
    try:
        parts = urlsplit(url)
        host, port = split_host_port(parts.netloc.rpartition("@")[2], 443 if parts.scheme == "https" else 80)
        problem = "" if parts.scheme in ("http", "https") else f"the scheme is {parts.scheme!r}"
    except ValueError as exc:
        problem = str(exc)
    if problem:
        if explicit is None:
            return None
        raise UsageError(
            f"upstream proxy {explicit!r} is not an http:// or https:// proxy URL: {problem}",
            "e.g. --upstream http://proxy.corp:3128",
        )
    shown = f"[{host}]" if ":" in host else host
    auth = f"{unquote(parts.username)}:{unquote(parts.password or '')}" if parts.username else None
    return f"{parts.scheme}://{shown}:{port}", auth


@contextlib.contextmanager
def _private_tempdir() -> Iterator[Path]:
    """The run's private directory, holding the pid of its run; directories of runs that died are swept first."""
    sweep_stale_run_dirs()
    path = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    try:
        (path / "pid").write_text(str(os.getpid()))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale_run_dirs(root: Path | None = None) -> list[Path]:
    """Remove this user's run directories whose run is gone (killed with SIGKILL, say); returns what was removed."""
    removed = []
    for path in (root or Path(tempfile.gettempdir())).glob(RUN_DIR_PREFIX + "*"):
        try:
            if path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            pid = int((path / "pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now (no pid yet)
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _SignalRelay:
    """Forwards signals to the child; before the child exists, remembers the first one (the run then stops).

    SIGINT/SIGQUIT typed at a terminal reach the whole foreground process group, the child included, so they are not
    sent a second time when authsome itself is in the terminal's foreground group.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}
        self._tty: int | None = None

    def __enter__(self) -> _SignalRelay:
        with contextlib.suppress(OSError):
            self._tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
        for sig in FORWARDED_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with whoever owns them
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        if self._tty is not None:
            os.close(self._tty)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.child is None:
            if self.pending is None:
                self.pending = signum
            return
        if signum in _TERMINAL_SIGNALS and self._from_terminal():
            return
        self.forward(signum)

    def forward(self, signum: int) -> None:
        if self.child is not None and self.child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def _from_terminal(self) -> bool:
        if self._tty is None:
            return False
        try:
            return os.tcgetpgrp(self._tty) == os.getpgrp()
        except OSError:
            return False
