"""``authsome gateway serve``: the proxy core of ``authsome run`` as a long-lived service for many agents.

The same parts as a run (:class:`~authsome.proxy.server.ProxyServer`, the front door, the injector, the tunnel
addon), with two differences: the :class:`~authsome.gateway.principals.AgentAuthenticator` decides who is asking
(each agent with its own routes, allow rules and connections), and the front door listens where it is told.

It stops on ``SIGTERM`` (or ``SIGINT``): no new connection is accepted, requests under way finish (up to
``drain_timeout`` seconds), then everything closes and the audit trail is flushed. Exit code 0.

With a store that other replicas change (``GatewayConfig.watch``), what they change is heard as it commits and applied
before the next authentication (:class:`_Replicated`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from authsome.gateway import state
from authsome.gateway.address import DEFAULT_HOST, DEFAULT_PORT, Address, is_loopback, show
from authsome.gateway.events import EventLog, GatewayReporter
from authsome.gateway.principals import AgentAuthenticator, Lookup, RoutesFor
from authsome.gateway.runs import ControlServer, RunAgents, lookup_with
from authsome.proxy.auth import FailureLimiter, Principal, Verdict
from authsome.proxy.report import Audit
from authsome.proxy.routing import Router

if TYPE_CHECKING:
    from authsome.gateway.worker import WorkerChannel, WorkerLink

HeadersFor = Callable[[str, str], Mapping[str, str]]
Changed = Callable[[str, str], None]  # (what, name), as authsome.store.backend.watch reports them
Watch = Callable[[Changed], AbstractContextManager[None]]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class GatewayOptions:
    """What the user chooses: where to listen, how to log, what to trust upstream, how long to drain."""

    listen: Address = (DEFAULT_HOST, DEFAULT_PORT)
    json_log: bool = False
    verbose: bool = False
    confdir: Path | None = None
    upstream_ca: Path | None = None
    upstream_proxy: str | None = None
    drain_timeout: float = 10.0
    workers: int = 1  # more: a supervisor and that many worker processes (authsome.gateway.workers)
    worker_args: tuple[str, ...] = ()  # global options a worker is started with besides --profile (e.g. --store)
    worker: WorkerLink | None = None  # set in a worker process: what it inherited from its supervisor


@dataclass
class GatewayConfig:
    """Everything the gateway needs; the api layer fills it in (it never sees the store itself)."""

    options: GatewayOptions
    lookup: Lookup  # agent name -> its record (or None)
    routes_for: RoutesFor  # (providers, default connections) -> routes
    headers_for: HeadersFor  # (provider, connection) -> headers to inject; may block (refresh)
    audit: Audit | None
    env: Mapping[str, str]
    files: state.GatewayFiles
    profile: str = "default"
    log: EventLog | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set it (or send SIGTERM) to stop
    watch: Watch | None = None  # hears of changes other replicas make to a shared store, while the gateway runs
    flush_audit: Callable[[], None] | None = None  # returns once queued audit records are on disk (a run has ended)
    tell_failure: Callable[[str], None] | None = None  # tells the replicas sharing the store of a wrong credential


class _Replicated(AgentAuthenticator):
    """The authenticator of a gateway whose store other replicas change. What they change is queued by
    :meth:`heard` (on the listener's thread) and applied here, on the proxy's loop, before the next authentication: a
    changed agent is checked afresh; a changed provider or credential drops every agent's rights (rebuilt from the
    store and the providers as they are now) and the credentials cached by the injector. A wrong credential another
    process counted is counted here at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_credentials: Callable[[], None] | None = None
        self._heard: deque[tuple[str, str]] = deque()
        self._known: set[str] = set()  # agents that have rights cached

    def heard(self, what: str, name: str) -> None:
        if what == "failure":  # another replica's (or worker's) wrong credential from address ``name``
            self.limiter.heard(name)
        else:
            self._heard.append((what, name))

    def authenticate(self, header: str, peer: str | None) -> Verdict:
        if self._heard:
            self._apply()
        verdict = super().authenticate(header, peer)
        if isinstance(verdict, Principal) and verdict.name is not None:
            self._known.add(verdict.name)
        return verdict

    def forget(self, name: str) -> None:
        super().forget(name)
        self._known.discard(name)

    def _apply(self) -> None:
        agents, everything = set(), False
        while self._heard:
            what, name = self._heard.popleft()
            if what == "agent":
                agents.add(name)
            else:
                everything = True
        for name in self._known.copy() if everything else agents:
            self.forget(name)
        if everything and self.on_credentials is not None:
            self.on_credentials()


class InFlight:
    """mitmproxy addon: the requests between their headers and their end, so that a shutdown can wait for them."""

    def __init__(self) -> None:
        self._flows: set[str] = set()
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def requestheaders(self, flow: Any) -> None:
        with self._lock:
            self._flows.add(flow.id)
            self.idle.clear()

    def response(self, flow: Any) -> None:
        self._done(flow)

    def error(self, flow: Any) -> None:
        self._done(flow)

    def _done(self, flow: Any) -> None:
        with self._lock:
            self._flows.discard(flow.id)
            if not self._flows:
                self.idle.set()

    def __len__(self) -> int:
        return len(self._flows)


def serve(config: GatewayConfig) -> int:
    """Run the gateway until ``config.stop`` is set or a stop signal arrives; returns the exit code (0)."""
    options = config.options
    if options.worker is not None:  # one of the processes of `--workers N`: its supervisor holds lock and state
        from authsome.gateway.worker import serve_worker

        with _stop_signals(config.stop):
            return serve_worker(config, _serve)
    log = config.log or EventLog(json_lines=options.json_log, verbose=options.verbose)
    host = options.listen[0]
    if not is_loopback(host):
        log.warning(
            f"listening on {host}, which other machines may reach: anyone there holding an agent token has that "
            "agent's rights; keep the tokens secret, and give agents the CA certificate only"
        )
    with state.running(config.files), _stop_signals(config.stop):
        if options.workers > 1:
            from authsome.gateway.workers import supervise

            return supervise(config, log)
        return _serve(config, log)


@contextmanager
def _stop_signals(stop: threading.Event) -> Iterator[None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handle)
    except ValueError:  # not the main thread (tests): `stop` alone ends it
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(config: GatewayConfig, log: EventLog, worker: WorkerChannel | None = None) -> int:
    """The proxy core as the gateway runs it; ``worker``: as a worker process (authsome.gateway.worker), on the
    listening socket it inherited, with the run agents its supervisor tells it of."""
    from authsome.proxy.mitm_internals import load_mitmproxy
    from authsome.proxy.server import ProxyServer, ServerOptions

    load_mitmproxy()
    from authsome.proxy import ca, environment
    from authsome.proxy import trust as run_trust
    from authsome.proxy.addon import Injector
    from authsome.proxy.auth import ProxyAuth
    from authsome.proxy.onboarding import LazyOnboarding
    from authsome.proxy.relay import FrontDoor
    from authsome.proxy.runner import front_upstream, parse_resolve, upstream_proxy
    from authsome.proxy.tunnel import Targets, Tunnels

    options, env = config.options, config.env
    resolve = parse_resolve(env.get(environment.TEST_RESOLVE_VAR, ""))
    upstream = upstream_proxy(options.upstream_proxy, env)
    confdir = (options.confdir or ca.default_confdir()).expanduser()
    ca_pem = ca.ensure_ca(confdir)
    runs = RunAgents() if worker is None else worker.runs  # the agents of runs served here: in memory, per run
    reporter = GatewayReporter(log, config.audit, runs)
    lookup = lookup_with(runs, config.lookup)
    kind = _Replicated if config.watch is not None else AgentAuthenticator
    limiter = FailureLimiter()
    if config.tell_failure is not None:  # every process serving a shared store counts the others' wrong credentials
        limiter.on_failed = config.tell_failure  # (heard through config.watch: see _Replicated.heard)
    elif worker is not None:  # the other workers count this worker's wrong credentials, and it theirs
        limiter.on_failed = worker.failed
        worker.hear_failures(limiter.heard)
    authenticator = kind(lookup, config.routes_for, limiter=limiter, on_denied=log.denied)
    runs.on_drop = authenticator.forget
    ready = threading.Event()
    inflight = InFlight()
    targets = Targets()
    injector = Injector(Router([]), config.headers_for, targets, reporter)
    watching: AbstractContextManager[None] = contextlib.nullcontext()
    if isinstance(authenticator, _Replicated) and config.watch is not None:
        authenticator.on_credentials = injector.forget_credentials
        watching = config.watch(authenticator.heard)
    with tempfile.TemporaryDirectory(prefix="authsome-gateway-") as scratch, watching:
        trusted = run_trust.prepare(
            run_trust.cache_dir(env), ca_pem, env, upstream_ca=options.upstream_ca, scratch=Path(scratch)
        )
        addons = [
            ProxyAuth(authenticator),
            inflight,
            injector,
            Tunnels(targets, upstream_auth=upstream[1] if upstream else None),
            LazyOnboarding(),
        ]
        front = FrontDoor(
            Router([]),
            authenticator,
            upstream=front_upstream(upstream, trusted.upstream),
            reporter=reporter,
            health=ready.is_set,
        )
        server_options = ServerOptions(
            confdir,
            trusted.upstream,
            upstream[0] if upstream else None,
            options.verbose,
            resolve,
            listen=options.listen,
            listener=worker.listening_socket() if worker is not None else None,
        )
        server = ProxyServer(server_options, addons, front)
        control: ControlServer | None = None
        try:
            port = server.start()
            if worker is not None:  # its supervisor holds the control socket and the state files (and says so)
                worker.serving(port)
            else:
                control = _publish(config, log, runs, port, ca_pem, upstream[0] if upstream else None)
            ready.set()
            while not config.stop.wait(1.0):  # a timeout: signal handlers run on this (main) thread
                pass
            ready.clear()
            if control is not None:
                control.stop()
            server.stop_accepting()
            log.event("draining", f"stopping: {len(inflight)} request(s) under way", in_flight=len(inflight))
            finished = inflight.idle.wait(options.drain_timeout)
            if not finished:
                log.warning(f"{len(inflight)} request(s) still under way after {options.drain_timeout:g} s: cut")
        finally:
            server.stop()
            reporter.close()
            trusted.close()
    log.event("stopped", "stopped", clean=True)
    return 0


def _publish(
    config: GatewayConfig, log: EventLog, runs: RunAgents, port: int, ca_pem: bytes, upstream: str | None
) -> ControlServer:
    """Listening: the control socket `authsome run` asks, the state file `gateway status` reads, the log line."""
    facts = gateway_facts(config, show((config.options.listen[0], port)), ca_pem, upstream)
    control = ControlServer(config.files.control, runs, lambda: facts, config.flush_audit)
    control.start()
    state.publish(config.files, facts)
    log.event("listening", f"listening on {facts['listen']} (profile {config.profile}, pid {os.getpid()})", **facts)
    return control


def gateway_facts(config: GatewayConfig, address: str, ca_pem: bytes, upstream: str | None) -> dict[str, Any]:
    """What a listening gateway publishes (its state file, the answer to a run, the ``listening`` event): never a
    credential, only where it is, since when, its CA and the proxy it chains through."""
    from authsome.proxy import ca

    confdir = (config.options.confdir or ca.default_confdir()).expanduser()
    return {
        "pid": os.getpid(),
        "listen": address,
        "profile": config.profile,
        "started_at": time.time(),
        "ca_cert": str(ca.ca_cert_path(confdir)),
        "ca_bundle": str(state.write_bundle(config.files.bundle, ca_pem, config.env)),
        "upstream": upstream,
    }
