"""Stand-in API servers for the proxy tests: real TLS (a trustme CA) on loopback, under the real provider host names.

The proxy's ``resolve`` option (``AUTHSOME_TEST_RESOLVE``) points those names at 127.0.0.1:<port>; only the socket
address changes, so SNI, certificate verification and routing see ``api.openai.com`` and friends. The child trusts the
test CA the way a user would (``SSL_CERT_FILE`` in its parent environment), never by disabling verification.

Every test that takes ``run`` runs twice (:func:`mode`): once with the run's own proxy, once served by a running
gateway (``authsome gateway serve`` in this process, with the test's credential source, the run's environment and the
same CA directory), as `authsome run` is when the user's gateway is up. In gateway mode each run must really be served
by the gateway, and its agent must be refused once the run has returned; a run the gateway cannot serve as its own
proxy would (an ``upstream_ca`` of its own, another chained proxy) must start its own proxy instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme
from tests.gateway_thread import gateway_thread
from tests.tls_server import TlsStandIn, on_thread, record_sni

from authsome.errors import CredentialMissing
from authsome.gateway.client import RunLease, lease_for_run
from authsome.gateway.events import EventLog
from authsome.gateway.service import GatewayConfig, GatewayOptions, serve
from authsome.gateway.state import GatewayFiles
from authsome.policy import Policy
from authsome.providers import Provider, parse_provider
from authsome.proxy import runner
from authsome.proxy.environment import RUN_MARKER, TEST_RESOLVE_VAR
from authsome.proxy.report import Reporter
from authsome.proxy.runner import Route, RunConfig, run_command

BUNDLED = Path(__file__).resolve().parents[3] / "src" / "authsome" / "providers" / "bundled"
HOSTS = ("api.openai.com", "api.anthropic.com", "api.github.com", "www.example.org")
SECRETS = {"openai": "sk-test-openai-REAL", "anthropic": "sk-ant-test-REAL", "github": "gho_test_REAL"}
PLACEHOLDER = "authsome-proxy-managed"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Seen:
    """One request as the stand-in received it."""

    sni: str | None
    method: str
    path: str
    headers: dict[str, str]
    resumed: bool | None = None  # whether the TLS connection resumed an earlier session (None: plain HTTP)


@dataclass
class StandIn:
    """A TLS (or plain) stand-in server and everything it saw."""

    port: int
    seen: list[Seen] = field(default_factory=list)
    sse_sent: list[float] = field(default_factory=list)
    connections: int = 0

    def last(self) -> Seen:
        assert self.seen, "the stand-in received no request"
        return self.seen[-1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> Seen:
        sni = getattr(self.connection, "sni", None)
        resumed = getattr(self.connection, "session_reused", None)
        seen = Seen(sni, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, resumed)
        self.server.state.seen.append(seen)
        return seen

    def _json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        seen = self._record()
        if self.path == "/ws" and seen.headers.get("upgrade", "").lower() == "websocket":
            return self._websocket(seen)
        if self.path.startswith("/sse"):
            return self._sse([b"data: first\n\n", b"data: second\n\n"], gap=1.0)
        if self.path == "/v1/models":
            return self._json(
                200,
                {
                    "object": "list",
                    "data": [{"id": "gpt-standin", "object": "model", "created": 0, "owned_by": "authsome"}],
                },
            )
        self._json(200, {"method": seen.method, "path": seen.path, "headers": seen.headers, "sni": seen.sni})

    def do_POST(self) -> None:
        seen = self._record()
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/v1/chat/completions":
            return self._chat(payload)
        self._json(200, {"method": seen.method, "path": seen.path, "headers": seen.headers, "body": payload})

    def _chat(self, payload: dict[str, Any]) -> None:
        base = {"id": "chatcmpl-standin", "created": 0, "model": payload.get("model", "gpt-standin")}
        if not payload.get("stream"):
            return self._json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hello from the stand-in"},
                            "finish_reason": "stop",
                        }
                    ],
                },
            )
        chunks = []
        for i, text in enumerate(["Hel", "lo"]):
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None if i == 0 else "stop"}],
            }
            chunks.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        chunks[-1] += b"data: [DONE]\n\n"
        self._sse(chunks, gap=1.0)

    def _sse(self, events: list[bytes], gap: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, event in enumerate(events):
            if i:
                time.sleep(gap)
            self.server.state.sse_sent.append(time.time())
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _websocket(self, seen: Seen) -> None:
        accept = base64.b64encode(hashlib.sha1((seen.headers["sec-websocket-key"] + WS_GUID).encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 0x8:  # close: echo it and stop
                self.wfile.write(bytes([0x88, len(data)]) + data)
                self.wfile.flush()
                return
            if opcode in (0x1, 0x2):
                reply = b"echo:" + data
                self.wfile.write(bytes([0x80 | opcode, len(reply)]) + reply)
                self.wfile.flush()


class _Server(TlsStandIn):
    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(_Handler, context)
        self.state = StandIn(self.port)

    def accepted(self) -> None:
        self.state.connections += 1


@pytest.fixture(scope="session")
def test_ca() -> trustme.CA:
    return trustme.CA(organization_name="authsome test CA")


@pytest.fixture(scope="session")
def test_ca_file(test_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("test-ca") / "test-ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return path


def _serve(context: ssl.SSLContext | None) -> Iterator[StandIn]:
    with on_thread(_Server(context)) as server:
        yield server.state


@pytest.fixture(scope="session")
def tls_server(test_ca: trustme.CA) -> Iterator[StandIn]:
    """One TLS stand-in answering for every host in HOSTS (its certificate names them all)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    test_ca.issue_cert(*HOSTS).configure_cert(context)
    context.sni_callback = record_sni
    yield from _serve(context)


@pytest.fixture(scope="session")
def plain_server() -> Iterator[StandIn]:
    yield from _serve(None)


@pytest.fixture
def standin(tls_server: StandIn) -> StandIn:
    tls_server.seen.clear()
    tls_server.sse_sent.clear()
    return tls_server


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mitmproxy's CA directory, shared by the session (created by the first run)."""
    return tmp_path_factory.mktemp("mitmproxy-confdir")


def bundled(name: str) -> Provider:
    return parse_provider(json.loads((BUNDLED / f"{name}.json").read_text()), source="bundled")


def custom(name: str, host_url: str | list[str]) -> Provider:
    return parse_provider(
        {
            "schema_version": 1,
            "name": name,
            "auth_type": "api_key",
            "flow": "api_key",
            "api_key": {"env_var": f"{name.upper().replace('-', '_')}_API_KEY"},
            "host_url": host_url,
        }
    )


class HeadersFor:
    """The test's credential source: real-looking secrets per provider, shaped by the provider's header rule."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        missing: frozenset[str] = frozenset(),
        delay: Mapping[str, float] | None = None,
    ) -> None:
        self.providers = providers
        self.missing = missing
        self.delay = dict(delay or {})
        self.calls: list[tuple[str, str]] = []

    def __call__(self, provider: str, connection: str) -> dict[str, str]:
        self.calls.append((provider, connection))
        time.sleep(self.delay.get(provider, 0.0))  # e.g. a token refresh
        if provider in self.missing:
            raise CredentialMissing(
                f"no credential stored for {provider}/{connection}", f"run `authsome login {provider}`"
            )
        name, value = self.providers[provider].header(f"{SECRETS.get(provider, 'sk-other-REAL')}-{connection}")
        return {name: value}


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small, explicit parent environment (the developer's own proxy or CA variables must not leak in)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "PYTHONPATH")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(extra or {})
    return env


@dataclass
class Run:
    code: int
    out: str
    err: str
    headers_for: HeadersFor
    served_by: str = "own proxy"  # or "gateway", or "nobody" (the child never started)
    agent: str | None = None  # the gateway's agent for the run (gateway mode)

    def json(self) -> Any:
        return json.loads(self.out)


RunFn = Callable[..., Run]
OWN_PROXY, GATEWAY = "own-proxy", "gateway"


@pytest.fixture(params=[OWN_PROXY, GATEWAY])
def mode(request: pytest.FixtureRequest) -> str:
    """Who serves the runs of the test: the run's own proxy, or the user's running gateway."""
    return str(request.param)


@dataclass
class InProcessGateway:
    """`authsome gateway serve` on a thread of this process (it gets the test's credential source)."""

    files: GatewayFiles
    address: tuple[str, int]
    records: list[dict[str, object]]  # its audit records

    def refuses(self, proxy_url: str) -> bool:
        """Whether the gateway refuses the agent of ``proxy_url`` (a run's) now: 407 to a CONNECT as that agent."""
        parts = urlsplit(proxy_url)
        credentials = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        with socket.create_connection(self.address, timeout=10) as sock:
            sock.sendall(
                b"CONNECT www.example.org:443 HTTP/1.1\r\nHost: www.example.org:443\r\n"
                b"Proxy-Authorization: Basic " + credentials.encode() + b"\r\n\r\n"
            )
            return sock.recv(4096).startswith(b"HTTP/1.1 407 ")


@contextlib.contextmanager
def gateway_serving(
    home: Path,
    env: Mapping[str, str],
    confdir: Path,
    providers: Mapping[str, Provider],
    headers_for: Callable[[str, str], Mapping[str, str]],
    audit: Callable[[dict[str, object]], None] | None = None,
) -> Iterator[InProcessGateway]:
    """A gateway on 127.0.0.1:<free port> for the test's home, in ``env`` (its upstream trust, resolve and chained
    proxy), signing with the CA in ``confdir``; its audit records are collected (and passed on to ``audit``)."""
    records: list[dict[str, object]] = []

    def collect(record: dict[str, object]) -> None:
        records.append(record)
        if audit is not None:
            audit(record)

    def routes_for(names: Sequence[str], defaults: Mapping[str, str]) -> list[Route]:
        return [Route(providers[p], defaults.get(p, "default")) for p in names or providers if p in providers]

    def serving(stop: threading.Event) -> int:
        config = GatewayConfig(
            GatewayOptions(listen=("127.0.0.1", 0), confdir=confdir, drain_timeout=5.0),
            lookup=lambda name: None,  # no stored agents: only the runs' own
            routes_for=routes_for,
            headers_for=headers_for,
            audit=collect,
            env=env,
            files=files,
            log=EventLog(json_lines=True, write=lambda line: None),
            stop=stop,
        )
        return serve(config)

    files = GatewayFiles(home / "gateway")
    with gateway_thread(serving, files) as published:
        host, _, port = str(published["listen"]).rpartition(":")
        yield InProcessGateway(files, (host, int(port)), records)


@pytest.fixture
def gateway(mode: str, tmp_path: Path) -> Iterator[InProcessGateway | None]:
    """In gateway mode, the user's running gateway for runs the test starts itself (as processes), signing with the
    CA in ``tmp_path / "confdir"``; None with the runs' own proxies."""
    if mode == OWN_PROXY:
        yield None
        return
    home = tmp_path / "gateway-home"
    home.mkdir()
    with gateway_serving(home, base_env(), tmp_path / "confdir", {}, lambda provider, connection: {}) as served:
        yield served


class _Observed:
    """The run's lease, observed: whether the run began on the gateway (it then served the child)."""

    def __init__(self, lease: RunLease) -> None:
        self.lease, self.began = lease, False

    @property
    def url(self) -> str:
        return self.lease.url

    @property
    def ca_cert(self) -> Path:
        return self.lease.ca_cert

    @property
    def upstream(self) -> str | None:
        return self.lease.upstream

    def begin(self, context: Mapping[str, object], reporter: Reporter) -> None:
        self.began = True
        self.lease.begin(context, reporter)

    def close(self) -> None:
        self.lease.close()


def own_proxy_expected(parent: Mapping[str, str], gateway_env: Mapping[str, str], overrides: Mapping[str, Any]) -> bool:
    """Whether `authsome run` must start its own proxy although the gateway is up (see runner._gateway_serves)."""
    chained = {name: env.get("HTTPS_PROXY") for name, env in (("run", parent), ("gateway", gateway_env))}
    return bool(
        overrides.get("upstream_ca")
        or overrides.get("upstream_proxy")
        or parent.get(RUN_MARKER)
        or chained["run"] != chained["gateway"]
    )


@pytest.fixture
def run(
    mode: str,
    tls_server: StandIn,
    plain_server: StandIn,
    test_ca_file: Path,
    confdir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> RunFn:
    """``run(cmd, providers=..., env=..., **RunConfig fields)``: run_command with the stand-ins mapped in; in gateway
    mode through a gateway started for this run, in the run's environment (``resolve`` included) updated with
    ``gateway_env`` (a gateway started elsewhere)."""
    own_proxies: list[object] = []
    serve_and_run = runner._serve_and_run

    def spy(*args: Any, **kwargs: Any) -> int:
        own_proxies.append(args)
        return serve_and_run(*args, **kwargs)

    monkeypatch.setattr(runner, "_serve_and_run", spy)

    def go(
        command: list[str],
        *,
        providers: tuple[Provider, ...] | None = None,
        trust_test_ca: bool = True,
        env: Mapping[str, str] | None = None,
        missing: frozenset[str] = frozenset(),
        delay: Mapping[str, float] | None = None,
        connections: Mapping[str, str] | None = None,
        gateway_env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Run:
        providers = providers if providers is not None else (bundled("openai"), bundled("anthropic"), bundled("github"))
        resolve = ",".join(
            [f"{h}:443=127.0.0.1:{tls_server.port}" for h in HOSTS]
            + [f"{h}:80=127.0.0.1:{plain_server.port}" for h in HOSTS]
        )
        parent = base_env({"AUTHSOME_TEST_RESOLVE": resolve})
        if trust_test_ca:
            parent["SSL_CERT_FILE"] = str(test_ca_file)
        parent.update(env or {})
        headers_for = HeadersFor({p.name: p for p in providers}, missing, delay)
        out_path = tmp_path / f"out-{time.monotonic_ns()}.txt"
        routes = [Route(p, (connections or {}).get(p.name, "default")) for p in providers]
        overrides.setdefault("confdir", confdir)
        config = RunConfig(command=command, routes=routes, headers_for=headers_for, env=parent, **overrides)
        own_proxies.clear()
        if mode == OWN_PROXY:
            return finish(config, out_path, headers_for)
        served_env = {**parent, **(gateway_env or {})}  # the user's gateway runs in the user's environment
        extra = ",".join(f"{k}={v}" for k, v in (config.resolve or {}).items())
        served_env[TEST_RESOLVE_VAR] = ",".join(filter(None, [parent.get(TEST_RESOLVE_VAR), extra]))
        home = tmp_path / f"gateway-home-{time.monotonic_ns()}"
        home.mkdir()
        by_name = {p.name: p for p in providers}
        audit = config.audit if callable(config.audit) else None  # (the gateway's records go to the test's too)
        with gateway_serving(home, served_env, config.confdir or confdir, by_name, headers_for, audit) as gw:
            choices = {r.provider.name: [r.connection] for r in routes}
            lease = lease_for_run(gw.files, [r.provider.name for r in routes], choices, config.policy or Policy())
            assert lease is not None, "the running gateway gave the run no agent"
            observed = _Observed(lease)
            config.gateway = observed
            result = finish(config, out_path, headers_for)
            assert gw.refuses(lease.url), "the run's agent outlived the run"
        result.served_by = "gateway" if observed.began else "own proxy" if own_proxies else "nobody"
        result.agent = lease.user
        if own_proxy_expected(parent, served_env, overrides):
            assert result.served_by != "gateway", "the gateway served a run it cannot serve as the run's own proxy"
        else:
            assert result.served_by != "own proxy", "the run started its own proxy although the gateway was up"
        assert {r.get("agent") for r in gw.records} <= {lease.user}, gw.records
        return result

    def finish(config: RunConfig, out_path: Path, headers_for: HeadersFor) -> Run:
        with out_path.open("wb") as out:
            capfd.readouterr()
            config.stdout = out
            code = run_command(config)
        err = capfd.readouterr().err
        return Run(code, out_path.read_text(), err, headers_for, "own proxy" if own_proxies else "nobody")

    return go


def py(script: str) -> list[str]:
    """A Python child (the test interpreter, so requests/httpx/openai/websockets are importable)."""
    return [sys.executable, "-c", script]
