"""The line between the gateway's supervisor and each of its worker processes: one inherited Unix socket, JSON lines.

Supervisor → worker: ``options`` (first: the worker's :class:`~authsome.gateway.service.GatewayOptions`), then the
agents of the runs being served (``add``, ``begin``, ``drop``), and ``synced`` once the worker has heard of every
one that exists. Worker → supervisor: ``ack`` for each ``add``/``begin``/``drop`` (in order), ``serving`` once it
accepts connections, and ``line`` for what a served run is shown (its warnings, its ``--verbose`` lines). Both ways:
``failed`` (a source address that sent a wrong proxy credential, passed on to the other workers). What crosses this
line is what the control socket deals in: agent names, token hashes, rights and client addresses; never a token or
a credential.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from authsome.store.agents import Agent, Rights

MAX_LINE = 1 << 20
MAX_PENDING = 4096  # messages queued for a peer that does not read; later ones are dropped
CLOSE_TIMEOUT = 1.0


class Channel:
    """One end: :meth:`send` queues a message for a writer thread (never blocks its caller); :meth:`messages` yields
    what the other end sends, until it closes."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_PENDING)
        self._writer = threading.Thread(target=self._write, name=f"authsome-{name}-out", daemon=True)
        self._writer.start()

    def send(self, message: Mapping[str, Any]) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(json.dumps(dict(message), separators=(",", ":")).encode() + b"\n")

    def messages(self) -> Iterator[dict[str, Any]]:
        """Each message received, in order; ends when the other end closes (or dies)."""
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE:
                return
            for line in lines:
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict):
                        yield message

    def close(self) -> None:
        """Send what is queued (for a second at most), then close."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._writer is not threading.current_thread():
            self._writer.join(CLOSE_TIMEOUT)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
        self.sock.close()

    def _write(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                self.sock.sendall(data)
            except OSError:
                return


def encode_agent(agent: Agent) -> dict[str, Any]:
    """A run's agent as it crosses the channel: its name, token hash and rights (the token never exists here)."""
    return {
        "name": agent.name,
        "token_hash": agent.token_hash,
        "rights": agent.rights.to_dict(),
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
        "expires_at": agent.expires_at,
    }


def decode_agent(data: Mapping[str, Any]) -> Agent:
    rights = data["rights"]
    return Agent(
        name=str(data["name"]),
        token_hash=str(data["token_hash"]),
        rights=Rights(
            providers=tuple(map(str, rights["providers"])),
            connections={str(p): tuple(map(str, names)) for p, names in rights["connections"].items()},
            allow=tuple(map(str, rights["allow"])),
            policy_source=rights.get("policy_source"),
        ),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        expires_at=data.get("expires_at"),
    )


def encode_options(options: Any) -> dict[str, Any]:
    """A :class:`~authsome.gateway.service.GatewayOptions` for a worker (what it needs of it)."""
    return {
        "listen": list(options.listen),
        "json_log": options.json_log,
        "verbose": options.verbose,
        "confdir": str(options.confdir) if options.confdir else None,
        "upstream_ca": str(options.upstream_ca) if options.upstream_ca else None,
        "upstream_proxy": options.upstream_proxy,  # may hold the chained proxy's credentials: never on a command line
        "drain_timeout": options.drain_timeout,
    }


def decode_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``GatewayOptions`` from :func:`encode_options`."""
    return {
        "listen": (str(data["listen"][0]), int(data["listen"][1])),
        "json_log": bool(data["json_log"]),
        "verbose": bool(data["verbose"]),
        "confdir": Path(data["confdir"]) if data.get("confdir") else None,
        "upstream_ca": Path(data["upstream_ca"]) if data.get("upstream_ca") else None,
        "upstream_proxy": data.get("upstream_proxy"),
        "drain_timeout": float(data["drain_timeout"]),
    }
