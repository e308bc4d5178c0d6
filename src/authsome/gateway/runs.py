"""The gateway's control socket: ``authsome run`` asks it for an agent that lives exactly as long as its child.

``<home>/profiles/<p>/gateway/control.sock`` (0600, in a 0700 directory, under the home the child of ``run`` cannot
see) accepts connections from processes of this user only (``SO_PEERCRED``). A connection sends one JSON line,
``{"op": "run", "providers": [...], "connections": {provider: [name, ...]}, "allow": [rules], "policy_source": str}``
(the first connection is the one a provider's requests get; a run's agent may pick any stored one per request, as
with its own proxy: see principals.principal_for), and gets one back: ``{"agent", "token", "listen", "ca_cert"}``
(or ``{"error"}``). The agent — named ``run.<hex>``, a name no stored agent can have — is held in memory only, and
dropped the moment the connection closes: when the run ends, however it ends (``kill -9`` included). Nothing on this
socket ever returns a credential; the token it hands out opens the proxy within the run's own rights, like the
per-run token of a run with its own proxy.

Before its child starts, the run sends ``{"op": "begin", "context": {"run_id", "command"}, "verbose": bool}`` and gets
``{"ok": true}``: its audit records then carry its run id and program name, as those of a run with its own proxy do,
and the connection carries the run's lines back, ``{"warn": text}`` always and ``{"info": text}`` (its ``--verbose``
decision lines) when asked. When its child has ended, the run shuts its side of the connection; the gateway drops the
agent, writes the audit records still queued, sends what lines are left and closes: once the run sees that, the token
is refused and the run's records are on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from authsome.store.agents import Agent, Rights, new_token, token_hash

MAX_REQUEST = 64 * 1024
PREFIX = "run."
CONTEXT_FIELDS = ("run_id", "command")  # what a run may add to its audit records (the rest is the gateway's own)
MAX_CONTEXT = 256  # characters of each
MAX_PENDING = 4096  # lines queued for a run that does not read them; later ones are dropped
ENDED_KEPT = 1024  # sessions of ended runs kept, for the records of requests that finish after their run
CLOSE_TIMEOUT = 2.0  # seconds the last lines of a run may take to go out


Send = Callable[[Mapping[str, object]], None]


@dataclass
class RunSession:
    """What a run told the gateway when it began: its audit context (run id, program name), whether it wants its
    ``--verbose`` lines, and where its lines go (its control connection; None once it ended)."""

    context: Mapping[str, str] = field(default_factory=dict)
    verbose: bool = False
    send: Send | None = None
    _warned: set[str] = field(default_factory=set)

    def info(self, text: str) -> None:
        """A decision line, shown by the run with ``--verbose`` only."""
        send = self.send  # (None from the moment the run ends, on another thread)
        if self.verbose and send is not None:
            send({"info": text})

    def warn(self, text: str) -> None:
        """A warning, always shown by the run, once per distinct text."""
        send = self.send
        if send is not None and text not in self._warned:
            self._warned.add(text)
            send({"warn": text})


class RunAgents:
    """The agents of the runs being served, by name (in memory: never in the store)."""

    def __init__(self, on_drop: Callable[[str], None] | None = None) -> None:
        self._agents: dict[str, Agent] = {}
        self._sessions: dict[str, RunSession] = {}
        self._ended: OrderedDict[str, RunSession] = OrderedDict()
        self._lock = threading.Lock()
        self.on_drop = on_drop  # told the name of each agent dropped (the authenticator forgets its cached answers)

    def get(self, name: str) -> Agent | None:
        with self._lock:
            return self._agents.get(name)

    def add(self, rights: Rights) -> tuple[Agent, str]:
        """A new run agent with ``rights``; returns it and its token."""
        token = new_token().reveal()
        now = time.time()
        agent = Agent(PREFIX + secrets.token_hex(6), token_hash(token), rights, now, now)
        with self._lock:
            self._agents[agent.name] = agent
        return agent, token

    def begin(self, name: str, session: RunSession) -> None:
        """Run ``name`` began: its audit context and where its lines go."""
        with self._lock:
            if name in self._agents:
                self._sessions[name] = session

    def session(self, name: str | None) -> RunSession | None:
        """The session of run agent ``name`` (one that ended a moment ago too: its last records), or None."""
        if not name or not name.startswith(PREFIX):
            return None
        with self._lock:
            return self._sessions.get(name) or self._ended.get(name)

    def drop(self, name: str) -> None:
        with self._lock:
            self._agents.pop(name, None)
            session = self._sessions.pop(name, None)
            if session is not None:
                session.send = None
                self._ended[name] = session
                while len(self._ended) > ENDED_KEPT:
                    self._ended.popitem(last=False)
        if self.on_drop is not None:
            self.on_drop(name)

    def put(self, agent: Agent) -> None:
        """Hold ``agent``, made elsewhere (a worker hears of its supervisor's run agents: authsome.gateway.worker)."""
        with self._lock:
            self._agents[agent.name] = agent

    def agents(self) -> list[Agent]:
        """The run agents held now."""
        with self._lock:
            return list(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)


def lookup_with(runs: RunAgents, stored: Callable[[str], Agent | None]) -> Callable[[str], Agent | None]:
    """Agent lookup for the authenticator: a run's agent first, then the store's."""

    def lookup(name: str) -> Agent | None:
        if name.startswith(PREFIX):
            return runs.get(name)
        return stored(name)

    return lookup


class ControlServer:
    """Serves the control socket on a thread; one thread per connected run (they are few, and mostly asleep)."""

    def __init__(
        self,
        path: Path,
        runs: RunAgents,
        facts: Callable[[], Mapping[str, Any]],
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.path, self.runs, self.facts = path, runs, facts
        self.flush = flush  # called when a run has ended, before it is told: its audit records are then on disk
        self._sock: socket.socket | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a gateway that was killed: we hold the gateway lock now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with socket_address(self.path) as address:
                sock.bind(address)
        finally:
            os.umask(old)
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._accept, name="authsome-control", daemon=True).start()

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="authsome-run", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        agent: Agent | None = None
        reader: IO[bytes] | None = None
        outbox: _Outbox | None = None
        with conn:
            try:
                if _peer_uid(conn) != os.getuid():
                    _send(conn, {"error": "this gateway serves its own user only"})
                    return
                reader = conn.makefile("rb")
                agent, token = self.runs.add(_rights(_receive(reader)))
                _send(conn, {**self.facts(), "agent": agent.name, "token": token})
                while message := _receive(reader, eof_ok=True):  # the run holds the connection while its child lives
                    if message.get("op") == "begin" and outbox is None:
                        outbox = _Outbox(conn)
                        outbox.put({"ok": True})  # the first line; the run starts its child once it has it
                        self.runs.begin(agent.name, _session(message, outbox.put))
                        outbox.start()  # so the session is known before the child's first request
            except (OSError, ValueError, KeyError, TypeError) as exc:
                if outbox is None:
                    with contextlib.suppress(OSError):
                        _send(conn, {"error": f"bad request: {type(exc).__name__}"})
            finally:
                if agent is not None:
                    self.runs.drop(agent.name)
                if self.flush is not None:
                    with contextlib.suppress(Exception):  # (a failed write is reported by the trail's writer)
                        self.flush()
                if outbox is not None:
                    outbox.close()  # the lines already queued go out; then the run sees the connection end
                if reader is not None:
                    reader.close()


class _Outbox:
    """A run's lines, written to its connection by a thread of their own: the proxy never waits for a run to read."""

    def __init__(self, conn: socket.socket) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._write, args=(conn,), name="authsome-run-lines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, message: Mapping[str, object]) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(json.dumps(dict(message)).encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=CLOSE_TIMEOUT)
        if self._thread.is_alive():
            self._thread.join(CLOSE_TIMEOUT)

    def _write(self, conn: socket.socket) -> None:
        while (data := self._queue.get()) is not None:
            try:
                conn.sendall(data)
            except OSError:
                return  # the run is gone


def _session(message: Mapping[str, Any], send: Send) -> RunSession:
    context = message.get("context")
    fields = context if isinstance(context, dict) else {}
    kept = {k: str(fields[k])[:MAX_CONTEXT] for k in CONTEXT_FIELDS if isinstance(fields.get(k), str)}
    return RunSession(kept, bool(message.get("verbose")), send)


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """``path`` as a unix socket address: a long one (over the 107 bytes ``sun_path`` holds: a deep home) goes through
    ``/proc/self/fd/<its directory>/<name>``, which the kernel resolves to the same place."""
    if len(os.fsencode(str(path))) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _rights(request: Mapping[str, Any]) -> Rights:
    if request.get("op") != "run":
        raise ValueError("unknown op")
    connections = {  # per provider: the connection its requests get, then the others X-Authsome-Connection may pick
        str(p): tuple(map(str, names)) if isinstance(names, list) else (str(names),)
        for p, names in dict(request.get("connections") or {}).items()
    }
    providers = tuple(sorted({*map(str, request.get("providers") or ()), *connections}))
    allow = tuple(str(rule) for rule in request.get("allow") or ())
    source = request.get("policy_source")
    return Rights(providers, connections, allow, str(source) if source else None)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _receive(reader: IO[bytes], *, eof_ok: bool = False) -> dict[str, Any]:
    """The next JSON line; an empty dict at the end of the connection when ``eof_ok``."""
    data = reader.readline(MAX_REQUEST + 1)
    if not data and eof_ok:
        return {}
    if not data.endswith(b"\n"):
        raise ValueError("incomplete request")
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("not an object")
    return request


def _send(conn: socket.socket, message: Mapping[str, Any]) -> None:
    conn.sendall(json.dumps(dict(message)).encode() + b"\n")
