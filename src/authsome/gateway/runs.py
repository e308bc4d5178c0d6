"""The gateway's control socket: ``authsome run`` asks it for an agent that lives exactly as long as its child.

``<home>/profiles/<p>/gateway/control.sock`` (0600, in a 0700 directory, under the home the child of ``run`` cannot
see) accepts connections from processes of this user only (``SO_PEERCRED``). A connection sends one JSON line,
``{"op": "run", "providers": [...], "connections": {provider: [name, ...]}, "allow": [rules], "policy_source": str}``
(the first connection is the one a provider's requests get; the others may be picked per request, as in a run), and
gets one back: ``{"agent", "token", "listen", "ca_cert"}`` (or ``{"error"}``). The agent — named ``run.<hex>``, a name
no stored agent can have — is held in memory only, and dropped the moment the connection closes: when the run ends,
however it ends (``kill -9`` included). Nothing on this socket ever returns a credential; the token it hands out
opens the proxy within the run's own rights, like the per-run token of a run with its own proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from authsome.store.agents import Agent, Rights, new_token, token_hash

MAX_REQUEST = 64 * 1024
PREFIX = "run."


class RunAgents:
    """The agents of the runs being served, by name (in memory: never in the store)."""

    def __init__(self, on_drop: Callable[[str], None] | None = None) -> None:
        self._agents: dict[str, Agent] = {}
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

    def drop(self, name: str) -> None:
        with self._lock:
            self._agents.pop(name, None)
        if self.on_drop is not None:
            self.on_drop(name)

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

    def __init__(self, path: Path, runs: RunAgents, facts: Callable[[], Mapping[str, Any]]) -> None:
        self.path, self.runs, self.facts = path, runs, facts
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
        with conn:
            try:
                if _peer_uid(conn) != os.getuid():
                    _send(conn, {"error": "this gateway serves its own user only"})
                    return
                request = _receive(conn)
                agent, token = self.runs.add(_rights(request))
                _send(conn, {**self.facts(), "agent": agent.name, "token": token})
                while conn.recv(4096):  # the run holds the connection open while its child lives
                    pass
            except (OSError, ValueError, KeyError, TypeError) as exc:
                with contextlib.suppress(OSError):
                    _send(conn, {"error": f"bad request: {type(exc).__name__}"})
            finally:
                if agent is not None:
                    self.runs.drop(agent.name)


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


def _receive(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk or len(data) > MAX_REQUEST:
            raise ValueError("incomplete request")
        data += chunk
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("not an object")
    return request


def _send(conn: socket.socket, message: Mapping[str, Any]) -> None:
    conn.sendall(json.dumps(dict(message)).encode() + b"\n")
