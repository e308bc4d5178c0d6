"""Gateway replicas on one PostgreSQL store, and what they talk to: a TLS API stand-in that checks each bearer token
against what the real OAuth server issued, and a counting relay in front of that server's token endpoint.

Replicas are ``authsome gateway serve`` processes, each with a home of its own holding the fleet's master key; agents
are real HTTP clients (httpx) holding only the proxy URL and the CA bundle that ``authsome agent env`` printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import trustme
from tests.e2e.gateway.conftest import AUTHSOME, Gateway, Result
from tests.tls_server import TlsStandIn, on_thread, record_sni

UPSTREAM_HOSTS = ("api.openai.com", "api.acme.test", "api.testidp.test")
ACME = {
    "schema_version": 1,
    "name": "acme",
    "display_name": "Acme",
    "auth_type": "api_key",
    "flow": "api_key",
    "api_key": {"env_var": "ACME_API_KEY"},
    "host_url": "api.acme.test",
}


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token in assertions and messages."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


# -- what the OAuth server issued ----------------------------------------------------------------------------------
@dataclass
class Grant:
    """One call of the token endpoint, as the relay saw it."""

    grant_type: str
    status: int
    answered_at: float
    presented: str | None = None  # fingerprint of the refresh token sent (refresh grants)
    access_token: str | None = None
    expires_at: float | None = None  # answered_at + expires_in: a little late, never early


@dataclass
class Issued:
    grants: list[Grant] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expiry(self, token: str) -> float | None:
        """When an access token the server issued expires (None: never issued)."""
        with self.lock:
            for grant in self.grants:
                if grant.access_token == token:
                    return grant.expires_at
        return None

    def refreshes(self) -> list[Grant]:
        with self.lock:
            return [g for g in self.grants if g.grant_type == "refresh_token"]


class _TokenRelay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RelayServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        forward = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        request = urllib.request.Request(self.server.target + self.path, data=body, headers=forward, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, payload, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, payload, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        now = time.time()
        grant = Grant(params.get("grant_type", ""), status, now)
        if params.get("refresh_token"):
            grant.presented = fingerprint(params["refresh_token"])
        if status == 200:
            data = json.loads(payload)
            grant.access_token = data.get("access_token")
            grant.expires_at = now + float(data.get("expires_in", 0))
        with self.server.issued.lock:
            self.server.issued.grants.append(grant)
        self.send_response(status)
        self.send_header("Content-Type", kind or "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)


class _RelayServer(TlsStandIn):
    def __init__(self, target: str) -> None:
        super().__init__(_TokenRelay, None)  # plain HTTP on loopback
        self.target = target
        self.issued = Issued()


@dataclass
class TokenRelay:
    """A loopback relay for the token endpoint of ``issuer``: ``url`` is where to send token requests."""

    url: str
    issued: Issued


@contextmanager
def token_relay(issuer: str) -> Iterator[TokenRelay]:
    with on_thread(_RelayServer(issuer)) as server:
        yield TokenRelay(f"http://127.0.0.1:{server.port}/token", server.issued)


# -- the API stand-in ----------------------------------------------------------------------------------------------
@dataclass
class Hit:
    """One request the API received."""

    at: float
    host: str | None
    path: str
    authorization: str | None


@dataclass
class Upstream:
    port: int
    hits: list[Hit] = field(default_factory=list)
    issued: Issued | None = None  # when set, api.testidp.test answers 401 to a bearer token not valid now

    def clear(self) -> None:
        self.hits.clear()

    def last_authorization(self) -> str | None:
        """The Authorization header of the last request received (None: it had none)."""
        return self.hits[-1].authorization


class _Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        now = time.time()
        host = getattr(self.connection, "sni", None)
        authorization = self.headers.get("Authorization")
        state = self.server.state
        state.hits.append(Hit(now, host, self.path, authorization))
        if self.path.startswith("/sse"):
            return self._stream()
        if self.path.startswith("/broken-gzip"):
            return self._broken_gzip()
        status, answer = 200, {"path": self.path, "expired": False}
        if host == "api.testidp.test" and state.issued is not None:
            token = (authorization or "").removeprefix("Bearer ")
            expiry = state.issued.expiry(token)
            if expiry is None or now >= expiry:
                status, answer = 401, {"path": self.path, "expired": expiry is not None}
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _broken_gzip(self) -> None:
        """A body that says it is gzip and is not: the proxy, which must check it for the credential, cuts it."""
        body = b"this is not gzip " * 64
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """Headers at once, the first event two seconds later: an answer that is under way for a while."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        time.sleep(2)
        with_event = b"data: late\n\n"
        try:
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(with_event), with_event))
            self.wfile.flush()
        except OSError:
            pass


class _ApiServer(TlsStandIn):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(_Api, context)
        self.state = Upstream(self.port)


@contextmanager
def upstream(ca: trustme.CA) -> Iterator[Upstream]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*UPSTREAM_HOSTS).configure_cert(context)
    context.sni_callback = record_sni
    with on_thread(_ApiServer(context)) as server:
        yield server.state


# -- replicas ------------------------------------------------------------------------------------------------------
@dataclass
class Fleet:
    """Replica homes on one database, and the gateways started on them."""

    root: Path
    url: str
    upstream_port: int
    ca_file: Path
    gateways: list[Gateway] = field(default_factory=list)

    def home(self, index: int) -> Path:
        home = self.root / f"replica-{index}"
        if not home.exists():
            home.mkdir(mode=0o700, parents=True)
            first = self.root / "replica-0" / "master.key"
            if index and first.exists():
                shutil.copy2(first, home / "master.key")  # one master key for the fleet
        return home

    def env(self, index: int, **extra: str) -> dict[str, str]:
        user_home = self.root / "user-home"  # one proxy CA for the fleet (~/.mitmproxy), as an operator mounts it
        user_home.mkdir(exist_ok=True)
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(user_home),
            "AUTHSOME_HOME": str(self.home(index)),
            "AUTHSOME_KEY_SOURCE": "file",
            "AUTHSOME_STORE_URL": self.url,
            "AUTHSOME_TEST_RESOLVE": ",".join(f"{h}:443=127.0.0.1:{self.upstream_port}" for h in UPSTREAM_HOSTS),
            "SSL_CERT_FILE": str(self.ca_file),
            **extra,
        }

    def cli(self, index: int, *args: str, input: str = "", **extra: str) -> Result:
        proc = subprocess.run(
            [AUTHSOME, *args], input=input, capture_output=True, text=True, env=self.env(index, **extra), timeout=60
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, index: int, *, command: list[str] | None = None, **extra: str) -> Gateway:
        """``authsome gateway serve`` on replica ``index`` (``command``: what runs authsome), once it listens."""
        env = self.env(index, **extra)
        process = subprocess.Popen(
            [*(command or [AUTHSOME]), "gateway", "serve", "--listen", "127.0.0.1:0", "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        gateway = Gateway(process, env, self.home(index))
        self.gateways.append(gateway)
        gateway.follow()
        gateway.listen = gateway.wait_for(lambda e: e.get("event") in ("listening", "text"), 60).get("listen", "")
        assert gateway.listen, f"the gateway did not start: {gateway.seen}"
        return gateway

    def close(self) -> None:
        for gateway in self.gateways:
            if gateway.process.poll() is None:
                gateway.process.kill()
                gateway.process.wait(10)
        errors = [line for gateway in self.gateways for line in gateway.internal_errors()]
        assert not errors, f"a replica's proxy hit an internal error: {errors}"


def kill(gateway: Gateway) -> None:
    """SIGKILL: no drain, no flush, nothing written after this."""
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(10)


@dataclass
class AgentClient:
    """An agent, as an HTTP client of one replica: the proxy URL with its token, and the CA bundle to trust."""

    name: str
    token: str
    gateway: Gateway
    bundle: Path

    def client(self, **options: Any) -> httpx.Client:
        proxy = f"http://{self.name}:{self.token}@127.0.0.1:{self.gateway.port}"
        return httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=str(self.bundle)), **options)


def agent(fleet: Fleet, index: int, gateway: Gateway, name: str, *rights: str) -> AgentClient:
    """Create agent ``name`` on replica ``index`` and return it as a client of ``gateway``."""
    created = fleet.cli(index, "agent", "create", name, *rights, "--quiet")
    assert created.code == 0, created.err
    return AgentClient(name, created.out.strip(), gateway, bundle_of(gateway))


def bundle_of(gateway: Gateway) -> Path:
    """The CA bundle the gateway announced when it started listening (the fleet shares one CA)."""
    return Path(gateway.wait_for(lambda e: e.get("event") == "listening")["ca_bundle"])
