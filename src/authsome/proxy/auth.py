"""Who may use the proxy: one place that maps a ``Proxy-Authorization`` header to a principal, or to a refusal.

A *principal* is who is asking: the child of ``authsome run`` (the per-run credential, :class:`RunCredential`) or an
agent of ``authsome gateway`` (its name and token; see :mod:`authsome.gateway.principals`). It carries the rights the
proxy applies to that principal's requests: the router (which providers, which connections), the allow rules and
the connections a request may pick. An :class:`Authenticator` decides; the front door (``relay.py``, for every
``CONNECT``) and :class:`ProxyAuth` (mitmproxy's side, for plain requests and for every request inside a tunnel)
both ask it, so the decision is made once, in one place.

A refusal (:class:`Denied`) is ``407`` with a one-line reason, or ``429`` while a source address is locked out after
too many wrong credentials, and no upstream connection is made. A tunnel authenticated by its CONNECT is checked
again before each request inside it, so a revoked agent is cut off at its next request.

No mitmproxy at import time: the front door imports this module; :class:`ProxyAuth` loads mitmproxy when it answers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from authsome.policy import Policy
from authsome.proxy.routing import Router

if TYPE_CHECKING:
    from mitmproxy import connection, http

REALM = "authsome"
PRINCIPAL = "authsome.principal"  # flow.metadata key: the principal of a request, set by ProxyAuth
REFUSED = "authsome.refused"  # flow.metadata key: the code of ProxyAuth's refusal of a request that did authenticate
RUN_REFUSAL = "this proxy serves only the command started by `authsome run`"
LOCAL_REFUSAL = "agents may not reach the gateway host's own loopback or link-local addresses"


@dataclass(frozen=True, eq=False)
class Principal:
    """Who a request comes from and what it may use.

    ``name`` is the agent's name (None: the child of ``authsome run``); ``connections`` maps a provider to the
    connections a request may pick with ``X-Authsome-Connection`` (None: any stored connection, as in ``run``);
    ``host_local`` says whether it may reach the proxy host's own loopback and link-local addresses (a run's child,
    on that host, can anyway; an agent in a container or on another machine must not reach the gateway host's
    private services or a cloud metadata endpoint through the gateway).
    """

    name: str | None
    router: Router
    policy: Policy = field(default_factory=Policy)
    connections: Mapping[str, frozenset[str]] | None = None
    host_local: bool = True

    def may_use(self, provider: str, connection: str) -> bool:
        """Whether this principal may use ``provider``'s connection ``connection``."""
        if self.connections is None:
            return True
        return connection in self.connections.get(provider, frozenset())

    def may_reach(self, host: str) -> bool:
        """Whether this principal may have the proxy connect to ``host`` (a canonical name or address)."""
        return self.host_local or not host_local(host)


def host_local(host: str) -> bool:
    """Whether ``host`` names the proxy host itself or its link: ``localhost``, loopback, link-local (169.254/16,
    the cloud metadata address included; fe80::/10) or unspecified. A name that merely resolves there is not caught
    (the check is on what the client asked for)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_unspecified


@dataclass(frozen=True)
class Denied:
    """A refusal: ``status`` 407 (no, wrong, revoked or expired credentials) or 429 (locked out for ``retry_after``
    seconds); ``reason`` is one line for the client, without the credential; ``code`` names it for machines."""

    status: int
    reason: str
    code: str = "proxy_auth_required"
    retry_after: int | None = None


Verdict = Principal | Denied


class Authenticator(Protocol):
    """Maps the ``Proxy-Authorization`` header sent from ``peer`` (an address, or None) to a principal or a refusal."""

    def authenticate(self, header: str, peer: str | None) -> Verdict: ...


def parse_basic(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from ``Basic <base64(user:password)>``, or None when the header is not that."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class RunCredential:
    """The per-run proxy credential of ``authsome run``: one user and token, one principal."""

    def __init__(self, user: str, token: str, principal: Principal) -> None:
        self._expected = base64.b64encode(f"{user}:{token}".encode())
        self.principal = principal

    @classmethod
    def from_pair(cls, credential: bytes, principal: Principal) -> RunCredential:
        """From ``b"user:token"``."""
        user, _, token = credential.decode().partition(":")
        return cls(user, token, principal)

    def authenticate(self, header: str, peer: str | None) -> Verdict:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "basic" and hmac.compare_digest(
            value.strip().encode("latin-1", "replace"), self._expected
        ):
            return self.principal
        return Denied(407, RUN_REFUSAL)


class FailureLimiter:
    """Wrong credentials per source address: a bucket of ``burst`` failures that refills one every ``refill`` s.

    An address whose bucket is empty is refused (429) before its credentials are even looked at, so a brute-force
    guesser gets ``burst`` tries, then one every ``refill`` seconds. At most ``max_addresses`` are remembered.
    ``on_failed`` hears of each failure counted here; :meth:`heard` counts one another process saw (the gateway's
    workers share their failures this way). Safe from any thread.
    """

    def __init__(
        self,
        burst: int = 10,
        refill: float = 6.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill = refill
        self.max_addresses = max_addresses
        self.clock = clock
        self.on_failed: Callable[[str], None] | None = None
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (failures still allowed, as of when)
        self._lock = threading.Lock()

    def _level(self, address: str, now: float) -> float:
        allowed, since = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), allowed + (now - since) / self.refill)

    def blocked(self, address: str | None) -> int | None:
        """Seconds until ``address`` may try again, or None when it may try now."""
        if address is None or address not in self._buckets:
            return None
        now = self.clock()
        with self._lock:
            level = self._level(address, now)
        if level >= 1:
            return None
        return max(1, math.ceil((1 - level) * self.refill))

    def failed(self, address: str | None) -> None:
        """Count one wrong credential from ``address`` (and tell ``on_failed``)."""
        if address is None:
            return
        self.heard(address)
        if self.on_failed is not None:
            self.on_failed(address)

    def heard(self, address: str) -> None:
        """Count one wrong credential from ``address`` that another process saw."""
        now = self.clock()
        with self._lock:
            level = self._level(address, now)
            if address not in self._buckets and len(self._buckets) >= self.max_addresses:
                self._forget(now)
            self._buckets[address] = (max(0.0, level - 1), now)

    def counted(self) -> dict[str, int]:
        """The failures each address still has counted against it (rounded up; full buckets left out): what another
        limiter needs to :meth:`heard` to refuse the same addresses."""
        now = self.clock()
        with self._lock:
            levels = {address: self._level(address, now) for address in self._buckets}
        return {address: math.ceil(self.burst - level) for address, level in levels.items() if level < self.burst}

    def _forget(self, now: float) -> None:
        """Drop the addresses whose bucket is full again (they are as good as new); the oldest half if none is."""
        full = [a for a in self._buckets if self._level(a, now) >= self.burst]
        for address in full or sorted(self._buckets, key=lambda a: self._buckets[a][1])[: len(self._buckets) // 2]:
            del self._buckets[address]


class ProxyAuth:
    """mitmproxy addon: every plain request and every request inside a tunnel is authenticated by the
    :class:`Authenticator`; its principal goes into ``flow.metadata[PRINCIPAL]`` for the injector.

    ``ProxyAuth(user, token)`` is the per-run credential with a principal that routes nothing (tests).
    """

    def __init__(self, authenticator: Authenticator | str, token: str | None = None) -> None:
        if isinstance(authenticator, str):
            authenticator = RunCredential(authenticator, token or "", Principal(None, Router([])))
        self.authenticator = authenticator
        self._tunnels: dict[str, str] = {}  # client id -> the Proxy-Authorization its CONNECT carried

    def http_connect(self, flow: http.HTTPFlow) -> None:
        header = flow.request.headers.get("Proxy-Authorization", "")
        if self._authenticate(flow, header) is not None and flow.response is None:
            self._tunnels[flow.client_conn.id] = header

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        header = self._tunnels.get(flow.client_conn.id)
        if header is None:
            header = flow.request.headers.get("Proxy-Authorization", "")
        self._authenticate(flow, header, inside=flow.client_conn.id in self._tunnels)

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.pop(client.id, None)

    def _authenticate(self, flow: http.HTTPFlow, header: str, *, inside: bool = False) -> Principal | None:
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else None
        verdict = self.authenticator.authenticate(header, peer)
        if isinstance(verdict, Principal):
            flow.request.headers.pop("Proxy-Authorization", None)
            flow.metadata[PRINCIPAL] = verdict
            if not inside and not verdict.may_reach(flow.request.host):  # a CONNECT or a plain request
                flow.response = refusal(Denied(403, LOCAL_REFUSAL, "destination_forbidden"))
                flow.metadata[REFUSED] = "destination_forbidden"
            return verdict
        flow.response = refusal(verdict, inside=inside)
        return None

    def valid(self, header: str) -> bool:
        """Whether ``header`` opens the proxy (from no particular address)."""
        return isinstance(self.authenticator.authenticate(header, None), Principal)


def refusal(denied: Denied, *, inside: bool = False) -> http.Response:
    """The response for a refusal: to a CONNECT or a plain request, one line of text with ``Proxy-Authenticate``
    (407) or ``Retry-After`` (429); inside a tunnel (where the client reads it as the server's answer), the JSON
    error SDKs show their user. The reason is also the status line's reason phrase."""
    from mitmproxy import http

    from authsome.proxy.report import ERROR_HEADER, error_body

    headers = {"Proxy-Authenticate": f'Basic realm="{REALM}"'} if denied.status == 407 else {}
    if denied.retry_after is not None:
        headers["Retry-After"] = str(denied.retry_after)
    if inside:
        body = error_body(denied.code, denied.reason, reason=denied.reason)
        headers.update({"Content-Type": "application/json", ERROR_HEADER: denied.code, "Connection": "close"})
    else:
        body = f"authsome: {denied.reason}\n".encode()
        headers["Content-Type"] = "text/plain"
    response = http.Response.make(denied.status, body, headers)
    response.reason = reason_phrase(denied)
    return response


def reason_phrase(denied: Denied) -> str:
    """``authsome: <reason>`` as one line of visible ASCII (what clients print for a failed CONNECT)."""
    return "".join(c if " " <= c <= "~" else "?" for c in f"authsome: {denied.reason}")
