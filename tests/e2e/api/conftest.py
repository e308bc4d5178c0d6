"""Library/CLI-level OAuth tests: the real authorization server, Chromium approving, authsome's own store."""

from __future__ import annotations

import json
import os
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.tls_server import TlsStandIn, on_thread

from authsome import Authsome, ConnectionInfo, LoginOptions
from oauth_server.fixtures import OAuthServer, approve, loopback_context
from oauth_server.harness import QueueUI, in_background

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = loopback_context(chromium)
    yield context.new_page()
    context.close()


@pytest.fixture
def idp(oauth_server: OAuthServer, tmp_path: Path) -> Authsome:
    """An Authsome whose registry has `testidp`, a provider pointing at the real server."""
    path = tmp_path / "testidp.json"
    data = oauth_server.provider("pkce").to_dict()
    data["client"] = {"client_id_env": "TESTIDP_CLIENT_ID"}  # public clients: no secret to ask for
    data["host_url"] = "api.testidp.test"
    path.write_text(json.dumps(data))
    auth = Authsome()
    auth.register(path)
    return auth


@pytest.fixture
def browser_login(page: Page) -> Callable[..., ConnectionInfo]:
    """Run `Authsome.login` on a worker thread while Chromium approves on the main thread."""

    def run(auth: Authsome, client_id: str, login: str = "alice", **options: object) -> ConnectionInfo:
        ui = QueueUI()
        opts = LoginOptions(client_id=client_id, redirect_port=0, **options)  # type: ignore[arg-type]
        future = in_background(auth.login, "testidp", opts, ui=ui)
        approve(page, ui.urls.get(timeout=20), login)
        return future.result(timeout=30)

    return run


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with 200 and records what arrived; ``/echo`` reflects the credential back."""

    seen: ClassVar[list[str | None]]
    headers_seen: ClassVar[list[dict[str, str]]]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        echo = self.path.startswith("/echo")  # a debug endpoint that reflects the request's credential
        auth = self.headers.get("Authorization", "")
        body = json.dumps({"you_sent": auth}).encode() if echo else b'{"ok": true}'
        self.send_response(200)
        if echo:
            self.send_header("X-Debug-Authorization", auth)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class StandInAPI:
    host: str
    port: int
    ca_file: Path
    seen: list[str | None]
    headers: list[dict[str, str]]


def _stand_in(host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInAPI]:
    ca = trustme.CA()
    ca_file = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = type("Echo", (_Echo,), {"seen": [], "headers_seen": []})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(host).configure_cert(context)
    with on_thread(TlsStandIn(handler, context)) as server:
        monkeypatch.setenv("AUTHSOME_TEST_RESOLVE", f"{host}:443=127.0.0.1:{server.port}")
        yield StandInAPI(host, server.port, ca_file, handler.seen, handler.headers_seen)


@pytest.fixture
def idp_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInAPI]:
    """A TLS API server for `testidp` under the name api.testidp.test (test CA; mapped by AUTHSOME_TEST_RESOLVE)."""
    yield from _stand_in("api.testidp.test", tmp_path, monkeypatch)


@pytest.fixture
def openai_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInAPI]:
    """A TLS stand-in for api.openai.com (test CA; mapped by AUTHSOME_TEST_RESOLVE)."""
    yield from _stand_in("api.openai.com", tmp_path, monkeypatch)


# -- who serves `run`: its own proxy, or the profile's running gateway ------------------------------------------------

OWN_PROXY, GATEWAY = "own-proxy", "gateway"


@pytest.fixture(params=[OWN_PROXY, GATEWAY])
def mode(request: pytest.FixtureRequest) -> str:
    """Who serves the test's runs: each run's own proxy, or the profile's running gateway."""
    return str(request.param)


class Runs:
    """``run(auth, command, upstream_ca=…, confdir=…, **options)``: ``auth.run`` as the test asks for it.

    With its own proxy, the run gets ``upstream_ca`` itself. In gateway mode the profile's gateway serves it: started
    for the run in this process (``Authsome.serve_gateway`` on a thread, in this environment: its resolve stand-ins,
    its chained proxy), given ``upstream_ca`` and the run's CA directory, and the run is called without
    ``upstream_ca`` (with it, a run starts its own proxy). Either way the run must have been served as the mode says:
    the audit records it added name a gateway agent of the run's own (``run.…``) in gateway mode and none otherwise,
    and its own proxy started only without the gateway."""

    def __init__(self, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from authsome.proxy import runner

        self.mode = mode
        self.own_proxies = 0
        serve_and_run = runner._serve_and_run

        def counted(*args: Any, **kwargs: Any) -> int:
            self.own_proxies += 1
            return serve_and_run(*args, **kwargs)

        monkeypatch.setattr(runner, "_serve_and_run", counted)

    @property
    def gateway(self) -> bool:
        return self.mode == GATEWAY

    def __call__(
        self, auth: Authsome, command: Sequence[str], *, upstream_ca: Path, confdir: Path, **options: Any
    ) -> int:
        before, proxies = len(auth.log()), self.own_proxies
        with self.serving(upstream_ca=upstream_ca, confdir=confdir):
            own = {} if self.gateway else {"upstream_ca": upstream_ca}
            code = auth.run(command, confdir=confdir, **own, **options)
        self.check_served(auth, since=before)
        assert self.own_proxies - proxies == (0 if self.gateway else 1), "the run was not served as the mode says"
        return code

    def check_served(self, auth: Authsome, since: int) -> list[str]:
        """The agents named by the request records added after the first ``since`` (all ``run.…`` in gateway
        mode, none with the run's own proxy); there must be some."""
        records = [r for r in auth.log()[since:] if r.get("event") == "request"]
        assert records, "the run left no request record"
        agents = [str(r.get("agent")) for r in records]
        if self.gateway:
            assert all(a.startswith("run.") for a in agents), f"not every request was served by the gateway: {agents}"
        else:
            assert not any(r.get("agent") for r in records), f"a gateway served the run: {agents}"
        return agents

    @contextmanager
    def serving(self, *, upstream_ca: Path, confdir: Path | None) -> Iterator[None]:
        """In gateway mode, the profile's gateway on 127.0.0.1:<free port> while the block runs (nothing otherwise)."""
        if not self.gateway:
            yield
            return
        from tests.gateway_thread import gateway_thread

        from authsome.gateway import service

        auth = Authsome(env=dict(os.environ))
        options = service.GatewayOptions(
            listen=("127.0.0.1", 0), confdir=confdir, upstream_ca=upstream_ca, drain_timeout=5.0
        )
        with gateway_thread(lambda stop: auth.serve_gateway(options, stop), auth.gateway_files):
            yield


@pytest.fixture
def run(mode: str, monkeypatch: pytest.MonkeyPatch) -> Runs:
    """``run(auth, command, upstream_ca=…, confdir=…)`` in the test's mode (see :class:`Runs`)."""
    return Runs(mode, monkeypatch)
