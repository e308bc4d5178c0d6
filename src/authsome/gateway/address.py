"""``HOST:PORT`` for the gateway's listener: parsed once, and whether it is reachable from other machines."""

from __future__ import annotations

import ipaddress

from authsome.errors import UsageError
from authsome.providers.hosts import split_host_port

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8931
Address = tuple[str, int]


def parse_listen(text: str) -> Address:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` (loopback) or ``HOST`` (the default port); port 0 picks a free one."""
    text = text.strip()
    loopback = not text or (text.startswith(":") and text.count(":") == 1)  # "" or ":PORT"
    try:
        return split_host_port(DEFAULT_HOST + text if loopback else text, DEFAULT_PORT, port_zero=True)
    except ValueError as exc:
        hint = f"e.g. --listen 127.0.0.1:{DEFAULT_PORT}"
        raise UsageError(f"--listen {text!r} is not HOST:PORT: {exc}", hint) from None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (``localhost`` and 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
