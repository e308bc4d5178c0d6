"""``HOST:PORT`` for the gateway's listener: parsed once, and whether it is reachable from other machines."""

from __future__ import annotations

import ipaddress

from authsome.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8931
Address = tuple[str, int]


def parse_listen(text: str) -> Address:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` (loopback) or ``HOST`` (the default port); port 0 picks a free one."""
    text = text.strip()
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _bad(text)
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad(text)
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise _bad(text)
    return host or DEFAULT_HOST, int(port)


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


def _bad(text: str) -> UsageError:
    return UsageError(f"--listen {text!r} is not HOST:PORT", f"e.g. --listen 127.0.0.1:{DEFAULT_PORT}")
