"""``authsome run`` through a running gateway: ask its control socket for an agent that lives as long as the run.

When this profile's gateway is up, a run needs no proxy of its own: the gateway already holds a warm CA, warm
upstream sessions and the store. :func:`lease_for_run` asks for an agent with the run's rights and keeps the
connection open; :meth:`RunLease.begin` gives the gateway the run's audit context and brings the run's lines back
(warnings, and its ``--verbose`` decision lines); :meth:`RunLease.close` (or the run dying) ends the agent.
None when no gateway answers: the run then starts its own proxy.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from authsome.gateway.runs import socket_address
from authsome.gateway.state import GatewayFiles
from authsome.policy import Policy
from authsome.providers.hosts import split_host_port
from authsome.proxy.report import Reporter

CONNECT_TIMEOUT = 2.0
END_TIMEOUT = 5.0  # seconds the gateway gets to confirm the end of a run (its agent dropped, its last lines sent)
_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - addresses to ask, not to bind


@dataclass
class RunLease:
    """The running gateway's agent for one run (a :class:`~authsome.proxy.runner.GatewayRun`): where the child's
    proxy is, as whom, and the CA the gateway signs with; the control connection stays open until :meth:`close`."""

    host: str
    port: int
    user: str
    token: str = field(repr=False)
    ca_cert: Path
    upstream: str | None  # the proxy the gateway chains through, ``scheme://host:port``
    sock: socket.socket = field(repr=False)
    reader: IO[bytes] = field(repr=False)  # the connection's incoming lines
    _lines: threading.Thread | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{self.user}:{self.token}@{host}:{self.port}"

    def begin(self, context: Mapping[str, object], reporter: Reporter) -> None:
        """Before the child starts: the gateway adds ``context`` (run id, program name) to the run's audit records,
        and sends the run's lines back to ``reporter``: warnings always, decision lines with ``reporter.verbose``. A
        gateway that does not answer leaves the run without them (its requests are served all the same)."""
        message = {"op": "begin", "context": dict(context), "verbose": reporter.verbose}
        try:
            self.sock.settimeout(CONNECT_TIMEOUT)
            self.sock.sendall(json.dumps(message).encode() + b"\n")
            _answer(self.reader.readline())
            self.sock.settimeout(None)
        except (OSError, ValueError):
            return
        self._lines = threading.Thread(
            target=_show_lines, args=(self.reader, reporter), name="authsome-gateway-lines", daemon=True
        )
        self._lines.start()

    def close(self) -> None:
        """End the agent and wait (a few seconds at most) until the gateway confirms it: from then on it refuses the
        token, and every line of the run has been shown."""
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_WR)  # the gateway sees the end of the run
            if self._lines is not None:
                self._lines.join(END_TIMEOUT)
            else:
                self.sock.settimeout(END_TIMEOUT)
                self.reader.read()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader still waiting (a gateway that did not answer)
            self.reader.close()
            self.sock.close()


def lease_for_run(
    files: GatewayFiles, providers: Sequence[str], connections: Mapping[str, Sequence[str]], policy: Policy
) -> RunLease | None:
    """An agent of the running gateway for this run, or None (no gateway, or it refused: the run goes on alone).

    ``connections`` maps each routed provider to its connections, the run's own first (``X-Authsome-Connection`` may
    pick the others, as in a run with its own proxy)."""
    if not files.control.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    request = {
        "op": "run",
        "providers": list(providers),
        "connections": {provider: list(names) for provider, names in connections.items()},
        "allow": [str(rule) for rule in policy.rules],
        "policy_source": policy.source if policy.rules else None,
    }
    reader: IO[bytes] | None = None
    try:
        with socket_address(files.control) as address:
            sock.connect(address)
        sock.sendall(json.dumps(request).encode() + b"\n")
        reader = sock.makefile("rb")
        answer = _answer(reader.readline())
        host, port = split_host_port(str(answer["listen"]), None)
        lease = RunLease(
            host=_WILDCARD.get(host, host),
            port=port,
            user=str(answer["agent"]),
            token=str(answer["token"]),
            ca_cert=Path(str(answer["ca_cert"])),
            upstream=str(answer["upstream"]) if answer.get("upstream") else None,
            sock=sock,
            reader=reader,
        )
    except (OSError, ValueError, KeyError, TypeError):
        if reader is not None:
            reader.close()
        sock.close()
        return None
    sock.settimeout(None)
    return lease


def _answer(data: bytes) -> dict[str, Any]:
    if not data:
        raise ValueError("the gateway closed the connection")
    answer = json.loads(data)
    if not isinstance(answer, dict) or "error" in answer:
        raise ValueError(str(answer.get("error") if isinstance(answer, dict) else answer))
    return answer


def _show_lines(reader: IO[bytes], reporter: Reporter) -> None:
    """The run's lines from the gateway, shown as a run with its own proxy shows them, until the gateway ends."""
    with contextlib.suppress(OSError, ValueError):
        for data in reader:
            message = json.loads(data)
            if isinstance(message, dict) and isinstance(message.get("warn"), str):
                reporter.warn(message["warn"])
            elif isinstance(message, dict) and isinstance(message.get("info"), str):
                reporter.info(message["info"])
