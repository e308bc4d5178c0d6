"""``authsome gateway serve --workers N``: N worker processes accepting from one listening socket, and their supervisor.

The proxy core runs on one event loop in one thread (mitmproxy is Python), so one process uses one core. Here the
supervisor binds the listening socket once and starts N workers (:mod:`authsome.gateway.worker`) that inherit it:
one accept queue, which whichever worker is free takes the next connection from (no ``SO_REUSEPORT``, whose
per-socket queues would lose the connections waiting on a worker that dies). The supervisor holds what a gateway
holds once: the profile's lock, the pid and state files, and the control socket that `authsome run` asks for an
agent; it serves no request itself.

* **Runs.** A run's agent lives in memory. The supervisor tells every worker over its channel (``add``, ``begin``,
  ``drop``) and waits for every worker's acknowledgement before it answers the run, so the run's token works on
  whichever worker accepts its connections, and is refused on every worker once the run has seen its connection
  end. A worker that does not acknowledge within ``ACK_TIMEOUT`` is killed and replaced.
* **Workers that die** are started again (at once; after a worker that lived less than ``QUICK_EXIT`` seconds,
  after a pause that doubles up to ``MAX_PAUSE``); a new worker hears of every run agent before it accepts.
* **Stopping.** ``SIGTERM``/``SIGINT``: no new run is served, the listening socket is closed here, each worker is
  sent ``SIGTERM`` and drains (``--drain``); one still running ``drain + STOP_MARGIN`` seconds later is killed.
  Workers live in process groups of their own (a Ctrl-C reaches the supervisor only), and a worker whose supervisor
  is gone (``kill -9``) drains and exits by itself.

What the workers share needs no help from here: the store serialises refreshes across processes (a lock, a re-read,
then a refresh only if still needed), and the audit trail is appended under its own lock with the chain's last
record re-read each time, so every process extends the same chain. Wrong proxy credentials are counted by every
worker: each tells the supervisor of its own, which passes them on to the others, so an address locked out by one
worker is locked out by all (give or take the attempts in flight while the news travels). The supervisor counts them
too, and tells a worker it starts (a replacement) of the failures still counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authsome.errors import AuthsomeError
from authsome.gateway import state
from authsome.gateway.address import Address, show
from authsome.gateway.channel import Channel, encode_agent, encode_options
from authsome.gateway.events import EventLog
from authsome.gateway.runs import ControlServer, RunAgents, RunSession
from authsome.gateway.worker import BACKLOG
from authsome.proxy.auth import FailureLimiter
from authsome.store.agents import Agent, Rights

if TYPE_CHECKING:
    from authsome.gateway.service import GatewayConfig

POLL = 0.1  # seconds between two looks at the workers
START_TIMEOUT = 60.0
ACK_TIMEOUT = 10.0
STOP_MARGIN = 5.0
QUICK_EXIT = 10.0
FIRST_PAUSE = 0.5
MAX_PAUSE = 30.0
WORKER_COMMAND = (sys.executable, "-P", "-m", "authsome")  # -P: nothing imported from the working directory


def bind(address: Address) -> socket.socket:
    """The gateway's listening socket (``TCP_NODELAY``, inherited by accepted sockets), as asyncio would make it."""
    host, port = address
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise AuthsomeError(f"cannot listen on {show(address)}: {exc.strerror or exc}", "check --listen") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(where)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise AuthsomeError(
            f"cannot listen on {show(address)}: {exc.strerror or exc}", "choose another --listen address or port"
        ) from None
    return sock


@dataclass
class Worker:
    """One worker process, as the supervisor sees it."""

    index: int
    process: subprocess.Popen[bytes]
    channel: Channel
    started_at: float = field(default_factory=time.monotonic)
    sent: int = 0  # changes sent that it must acknowledge
    acked: int = 0
    serving: bool = False
    alive: bool = True  # its channel is open
    ended: bool = False  # its process has ended (seen by Pool.tend)
    error: tuple[str, str | None] | None = None  # why it could not serve, as it said (message, hint)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class Pool:
    """The worker processes: started, told of every run agent, replaced when they die, stopped."""

    def __init__(
        self,
        count: int,
        argv: list[str],
        env: Mapping[str, str],
        listener: socket.socket,
        options: Mapping[str, Any],
        log: EventLog,
    ) -> None:
        self.count, self.argv, self.env, self.listener, self.log = count, argv, env, listener, log
        self.options = options  # the workers' GatewayOptions (authsome.gateway.channel.encode_options)
        self.snapshot: Callable[[], list[dict[str, Any]]] = list  # the messages that tell a new worker every run
        self.on_line: Callable[[str, Mapping[str, Any]], None] = lambda name, line: None
        self.on_change: Callable[[], None] = lambda: None  # a worker started serving or ended
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self._lock = threading.RLock()  # spawning and broadcasting: a new worker's snapshot misses no change
        self._changed = threading.Condition()
        self._pause: dict[int, float] = {}
        self._not_before: dict[int, float] = {}
        self.failures = FailureLimiter()  # every worker's wrong credentials, for the workers started later

    # -- starting ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every worker; returns once all of them serve (or raises, having stopped them, when one cannot)."""
        for index in range(1, self.count + 1):
            self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT
        failed: Worker | None = None
        with self._changed:
            while not all(w.serving for w in self.workers.values()) and time.monotonic() < deadline:
                failed = next((w for w in self.workers.values() if not w.alive or w.process.poll() is not None), None)
                if failed is not None:
                    break
                self._changed.wait(POLL)
        if failed is None and all(w.serving for w in self.workers.values()):
            return
        code = None
        if failed is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = failed.process.wait(STOP_MARGIN)  # its own exit code (it said why), not our SIGTERM's
        self.stop(0.0)
        if failed is not None and failed.error is not None:
            message, hint = failed.error
            why = f"gateway worker {failed.index} did not start: {message}"
        else:
            hint = "its error is in the lines above"
            detail = f"exit code {code}" if failed is not None else f"not serving after {START_TIMEOUT:g} s"
            why = f"a gateway worker did not start ({detail})"
        exit_code = code if code is not None and code > 0 else 1  # the worker's documented code, e.g. 2 or 7
        raise AuthsomeError(why, hint, exit_code=exit_code)

    def _spawn(self, index: int) -> Worker:
        ours, theirs = socket.socketpair()
        with self._lock:
            try:
                argv = [*self.argv, "--fds", f"{self.listener.fileno()},{theirs.fileno()}", "--index", str(index)]
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    env=dict(self.env),
                    pass_fds=(self.listener.fileno(), theirs.fileno()),
                    process_group=0,  # a Ctrl-C reaches the supervisor, which stops the workers in order
                )
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            worker = Worker(index, process, Channel(ours, f"supervisor-{index}"))
            worker.channel.send({"op": "options", "options": self.options})
            for message in self.snapshot():
                self._send(worker, message)
            for address, count in self.failures.counted().items():  # a replacement refuses whom the others refuse
                for _ in range(count):
                    worker.channel.send({"op": "failed", "address": address})
            worker.channel.send({"op": "synced"})
            self.workers[index] = worker
        threading.Thread(target=self._listen, args=(worker,), name=f"authsome-worker-{index}", daemon=True).start()
        text = f"worker {index} started (pid {process.pid})"
        self.log.event("worker", text, action="started", index=index, worker_pid=process.pid)
        return worker

    # -- runs ----------------------------------------------------------------------------------------------------
    def broadcast(self, message: Mapping[str, Any], before: Callable[[], None] | None = None) -> None:
        """Tell every worker (``before`` runs first, atomically with the sending); return once each has applied it.
        A worker that does not within ``ACK_TIMEOUT`` is killed (its replacement starts with every run)."""
        with self._lock:
            if before is not None:
                before()
            targets = [(w, self._send(w, message)) for w in self.workers.values() if w.alive]
        deadline = time.monotonic() + ACK_TIMEOUT
        with self._changed:
            for worker, number in targets:
                while worker.alive and worker.acked < number and (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
        for worker, number in targets:
            if worker.alive and worker.acked < number:
                self.log.warning(f"worker {worker.index} (pid {worker.process.pid}) did not answer: replacing it")
                worker.kill()

    @staticmethod
    def _send(worker: Worker, message: Mapping[str, Any]) -> int:
        worker.sent += 1
        worker.channel.send(message)
        return worker.sent

    def _listen(self, worker: Worker) -> None:
        for message in worker.channel.messages():
            op = message.get("op")
            if op == "ack":
                with self._changed:
                    worker.acked += 1
                    self._changed.notify_all()
            elif op == "serving":
                with self._changed:
                    worker.serving = True
                    self._changed.notify_all()
                text = f"worker {worker.index} serving (pid {worker.process.pid})"
                self.log.event("worker", text, action="serving", index=worker.index, worker_pid=worker.process.pid)
                self.on_change()
            elif op == "error":
                worker.error = (str(message.get("message")), str(message["hint"]) if message.get("hint") else None)
            elif op == "line" and isinstance(message.get("message"), dict):
                self.on_line(str(message.get("agent")), message["message"])
            elif op == "failed" and isinstance(message.get("address"), str):
                self._tell_others(worker, message["address"])
        with self._changed:
            worker.alive = False
            self._changed.notify_all()

    def _tell_others(self, source: Worker, address: str) -> None:
        """Count a worker's wrong credential here and pass it on to the other workers (no acknowledgement: nobody
        waits for it). Under the spawning lock: a worker being started hears of it once, counted or passed on."""
        with self._lock:
            self.failures.heard(address)
            others = [w for w in self.workers.values() if w is not source and w.alive]
        for worker in others:
            worker.channel.send({"op": "failed", "address": address})

    # -- tending -------------------------------------------------------------------------------------------------
    def tend(self) -> None:
        """Replace the workers that ended (unless stopping), pausing before a worker that keeps dying young."""
        if self.stopping:
            return
        now = time.monotonic()
        for index, worker in list(self.workers.items()):
            if not worker.ended:
                code = worker.process.poll()
                if code is None:
                    continue
                self._ended(worker, code, now)
            if now >= self._not_before[index]:
                try:
                    self._spawn(index)
                except OSError as exc:  # out of processes or descriptors: try again later
                    self._not_before[index] = now + MAX_PAUSE
                    self.log.warning(f"cannot start worker {index} ({exc.strerror or exc}); trying again later")

    def _ended(self, worker: Worker, code: int, now: float) -> None:
        worker.ended = True
        worker.channel.close()
        with self._changed:
            worker.alive = worker.serving = False
            self._changed.notify_all()
        lived = now - worker.started_at
        pause = 0.0 if lived >= QUICK_EXIT else min(MAX_PAUSE, max(FIRST_PAUSE, 2 * self._pause.get(worker.index, 0)))
        self._pause[worker.index] = pause
        self._not_before[worker.index] = now + pause
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        self.log.warning(
            f"worker {worker.index} (pid {worker.process.pid}) ended ({how}) after {lived:.1f} s; "
            f"starting another{f' in {pause:g} s' if pause else ''}"
        )
        self.on_change()

    def pids(self) -> list[int]:
        return [w.process.pid for _, w in sorted(self.workers.items()) if w.serving]

    # -- stopping ------------------------------------------------------------------------------------------------
    def stop(self, drain: float) -> None:
        """``SIGTERM`` to every worker (each drains for up to ``drain`` s); kill those still running after that."""
        self.stopping = True
        workers = list(self.workers.values())
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + drain + STOP_MARGIN
        for worker in workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.warning(f"worker {worker.index} (pid {worker.process.pid}) still running: killed")
                worker.kill()
                worker.process.wait()
            worker.channel.close()


class SharedRuns(RunAgents):
    """The supervisor's run agents: each change reaches every worker before the run hears back."""

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self.pool = pool
        self._dropping: set[str] = set()  # being dropped: a worker started meanwhile must not hear of them
        pool.snapshot = self.messages
        pool.on_line = self.line

    def add(self, rights: Rights) -> tuple[Agent, str]:
        agent, token = super().add(rights)
        self.pool.broadcast({"op": "add", "agent": encode_agent(agent)})
        return agent, token

    def begin(self, name: str, session: RunSession) -> None:
        super().begin(name, session)
        self.pool.broadcast(_begin(name, session))

    def drop(self, name: str) -> None:
        self.pool.broadcast({"op": "drop", "agent": name}, before=lambda: self._dropping.add(name))
        super().drop(name)  # after every worker: lines they sent until then still reach the run
        self._dropping.discard(name)

    def messages(self) -> list[dict[str, Any]]:
        """What tells a new worker every run being served (called with the pool's lock held)."""
        found: list[dict[str, Any]] = []
        for agent in self.agents():
            if agent.name in self._dropping:
                continue
            found.append({"op": "add", "agent": encode_agent(agent)})
            session = self.session(agent.name)
            if session is not None:
                found.append(_begin(agent.name, session))
        return found

    def line(self, name: str, line: Mapping[str, Any]) -> None:
        """A line a worker has for run ``name``: to the run (a warning once, whichever worker saw it)."""
        session = self.session(name)
        if session is None:
            return
        if isinstance(line.get("warn"), str):
            session.warn(line["warn"])
        elif isinstance(line.get("info"), str):
            session.info(line["info"])


def _begin(name: str, session: RunSession) -> dict[str, Any]:
    return {"op": "begin", "agent": name, "context": dict(session.context), "verbose": session.verbose}


def supervise(config: GatewayConfig, log: EventLog) -> int:
    """Serve with ``config.options.workers`` worker processes until stopped (the caller holds the gateway's lock)."""
    from authsome.gateway.service import gateway_facts
    from authsome.proxy import ca
    from authsome.proxy.runner import upstream_proxy

    options = config.options
    confdir = (options.confdir or ca.default_confdir()).expanduser()
    ca_pem = ca.ensure_ca(confdir)  # made once, here, before workers that would each want one
    upstream = upstream_proxy(options.upstream_proxy, config.env)
    listener = bind(options.listen)
    address = show((options.listen[0], int(listener.getsockname()[1])))
    argv = [*WORKER_COMMAND, "--profile", config.profile, *options.worker_args, "gateway", "worker"]
    argv += ["--json"] if options.json_log else []
    pool = Pool(options.workers, argv, config.env, listener, encode_options(options), log)
    runs = SharedRuns(pool)
    facts = {**gateway_facts(config, address, ca_pem, upstream[0] if upstream else None), "workers": []}
    control = ControlServer(config.files.control, runs, lambda: facts)
    live = threading.Event()
    publishing = threading.Lock()

    def publish() -> None:
        """The state file, with the pids of the workers serving now."""
        with publishing:
            facts["workers"] = pool.pids()
            state.publish(config.files, facts)

    pool.on_change = lambda: publish() if live.is_set() else None
    try:
        pool.start()
        control.start()
        publish()
        live.set()
        log.event(
            "listening",
            f"listening on {address} (profile {config.profile}, pid {os.getpid()}, {options.workers} workers)",
            **facts,
        )
        while not config.stop.wait(POLL):
            pool.tend()
        live.clear()
        log.event("draining", f"stopping: {len(pool.pids())} worker(s) finish their requests", workers=pool.pids())
    finally:
        control.stop()  # no new run is served
        listener.close()  # new connections are refused; each worker closes its own copy, then drains
        pool.stop(options.drain_timeout)
    log.event("stopped", "stopped", clean=True)
    return 0
