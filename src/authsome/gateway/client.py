"""``authsome run`` through a running gateway: ask its control socket for an agent that lives as long as the run.

When this profile's gateway is up, a run needs no proxy of its own: the gateway already holds a warm CA, warm
upstream sessions and the store. :func:`lease_for_run` asks for an agent with the run's rights and keeps the
connection open; closing it (:meth:`~authsome.proxy.runner.GatewayRun.close`, or the run dying) ends the agent.
None when no gateway answers: the run then starts its own proxy.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from authsome.gateway.runs import socket_address
from authsome.gateway.state import GatewayFiles
from authsome.policy import Policy
from authsome.providers.hosts import split_host_port
from authsome.proxy.runner import GatewayRun

CONNECT_TIMEOUT = 2.0
_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - addresses to ask, not to bind


def lease_for_run(
    files: GatewayFiles, providers: Sequence[str], connections: Mapping[str, Sequence[str]], policy: Policy
) -> GatewayRun | None:
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
    try:
        with socket_address(files.control) as address:
            sock.connect(address)
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = _line(sock)
        host, port = split_host_port(str(answer["listen"]), None)
        lease = GatewayRun(
            host=_WILDCARD.get(host, host),
            port=port,
            user=str(answer["agent"]),
            token=str(answer["token"]),
            ca_cert=Path(str(answer["ca_cert"])),
            close=sock.close,
        )
    except (OSError, ValueError, KeyError, TypeError):
        with contextlib.suppress(OSError):
            sock.close()
        return None
    sock.settimeout(None)
    return lease


def _line(sock: socket.socket) -> dict[str, object]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ValueError("the gateway closed the connection")
        data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict) or "error" in answer:
        raise ValueError(str(answer.get("error") if isinstance(answer, dict) else answer))
    return answer
