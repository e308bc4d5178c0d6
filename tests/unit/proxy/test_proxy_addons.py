"""The mitmproxy addons without sockets: proxy auth, tunnel decisions and injection, on mitmproxy's test flows."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from mitmproxy import http, options
from mitmproxy.proxy import context
from mitmproxy.test import tflow, tutils

from authsome.errors import CredentialMissing, RefreshFailed
from authsome.policy import build_policy
from authsome.proxy.addon import CONNECTION_HEADER, ERROR_HEADER, Injector, split_authority
from authsome.proxy.auth import ProxyAuth
from authsome.proxy.report import Reporter
from authsome.proxy.routing import Route, Router
from authsome.proxy.tunnel import Targets, Tunnels

from .conftest import make_provider

SECRET = "sk-live-secret-value"
OPENAI = make_provider("openai", "api.openai.com")
GITHUB = make_provider("github", ["api.github.com"])
TWIN = make_provider("twin", "api.twin.test")
TWIN2 = make_provider("twin2", "api.twin.test")


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)


class Headers:
    """A headers_for that records its calls and can be told to fail."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.error = error

    def __call__(self, provider: str, connection: str) -> Mapping[str, str]:
        self.calls.append((provider, connection))
        if self.error is not None:
            raise self.error
        return {"Authorization": f"Bearer {SECRET}-{connection}"}


def https_flow(
    host: str = "api.openai.com",
    path: str = "/v1/models",
    *,
    port: int = 443,
    headers: dict[str, str] | None = None,
    sni: str | None = None,
) -> http.HTTPFlow:
    """A request inside a CONNECT tunnel to host:port, as mitmproxy presents it (transparent mode, origin-form)."""
    req = tutils.treq(
        host=host,
        port=port,
        scheme=b"https",
        path=path.encode(),
        authority=b"",
        headers=http.Headers(
            host=host if port == 443 else f"{host}:{port}", authorization="Bearer authsome-proxy-managed"
        ),
    )
    for k, v in (headers or {}).items():
        req.headers[k] = v
    flow = tflow.tflow(req=req)
    flow.client_conn.sni = host if sni is None else sni
    flow.server_conn.sni = None
    flow.server_conn.error = None
    return flow


class Rig:
    def __init__(
        self,
        *routes: Route,
        headers: Headers | None = None,
        allow: tuple[str, ...] = (),
        verbose: bool = True,
        ttl: float = 2.0,
    ) -> None:
        self.router = Router(routes)
        self.targets = Targets()
        self.lines = Lines()
        self.audited: list[dict[str, object]] = []
        self.reporter = Reporter(verbose=verbose, audit=self.audited.append, write=self.lines)
        self.headers = headers or Headers()
        self.injector = Injector(
            self.router,
            self.headers,
            self.targets,
            self.reporter,
            policy=build_policy(allow) if allow else None,
            credential_ttl=ttl,
        )

    def tunnel(self, flow: http.HTTPFlow, host: str | None = None, port: int | None = None) -> http.HTTPFlow:
        self.targets.set(
            flow.client_conn.id, (host or flow.request.host.lower().rstrip("."), port or flow.request.port)
        )
        return flow

    def request(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        fetching = self.injector.requestheaders(flow)  # an awaitable only when the credential is not cached
        if fetching is not None:
            # on a thread of its own: another test's fixture (a browser session) may own this thread's event loop
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, fetching).result()
        return flow

    def finish(self, flow: http.HTTPFlow) -> None:
        self.injector.response(flow)
        self.reporter.close()


def body(flow: http.HTTPFlow) -> dict[str, Any]:
    assert flow.response is not None
    return json.loads(flow.response.content or b"{}")


# -- proxy authentication ------------------------------------------------------------------------------------------


def test_connect_without_credentials_gets_407() -> None:
    auth = ProxyAuth("authsome", "tok")
    for header in (None, basic("authsome", "wrong"), basic("other", "tok"), "Bearer tok", "Basic !!!"):
        flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.openai.com", port=443, path=b""))
        if header:
            flow.request.headers["Proxy-Authorization"] = header
        auth.http_connect(flow)
        assert flow.response is not None and flow.response.status_code == 407, header
        assert flow.response.headers["Proxy-Authenticate"].startswith("Basic")


def test_authenticated_tunnel_stays_authenticated_and_the_header_is_removed() -> None:
    auth = ProxyAuth("authsome", "tok")
    connect = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.openai.com", port=443, path=b""))
    connect.request.headers["Proxy-Authorization"] = basic("authsome", "tok")
    auth.http_connect(connect)
    assert connect.response is None and "Proxy-Authorization" not in connect.request.headers
    inner = tflow.tflow(client_conn=connect.client_conn)
    auth.requestheaders(inner)
    assert inner.response is None
    auth.client_disconnected(connect.client_conn)
    again = tflow.tflow(client_conn=connect.client_conn)
    auth.requestheaders(again)
    assert again.response is not None and again.response.status_code == 407


def test_plain_requests_need_the_credential_each_time() -> None:
    auth = ProxyAuth("authsome", "tok")
    ok = tflow.tflow()
    ok.request.headers["Proxy-Authorization"] = basic("authsome", "tok")
    auth.requestheaders(ok)
    assert ok.response is None and "Proxy-Authorization" not in ok.request.headers
    bad = tflow.tflow(client_conn=ok.client_conn)
    auth.requestheaders(bad)
    assert bad.response is not None and bad.response.status_code == 407


# -- tunnels -------------------------------------------------------------------------------------------------------


def connect_flow(host: str, port: int = 443) -> http.HTTPFlow:
    return tflow.tflow(req=tutils.treq(method=b"CONNECT", host=host, port=port, path=b""))


def test_tunnel_targets_are_recorded_canonical() -> None:
    targets = Targets()
    tunnels = Tunnels(targets)
    flow = connect_flow("API.OpenAI.com.")
    tunnels.http_connect(flow)
    assert targets.get(flow.client_conn.id) == ("api.openai.com", 443)
    tunnels.client_disconnected(flow.client_conn)
    assert targets.get(flow.client_conn.id) is None


def test_refused_connect_records_no_target() -> None:
    targets = Targets()
    tunnels = Tunnels(targets)
    flow = connect_flow("api.openai.com")
    flow.response = http.Response.make(407)
    tunnels.http_connect(flow)
    assert targets.get(flow.client_conn.id) is None


def test_upstream_sni_is_the_connect_host_whatever_the_client_says() -> None:
    from mitmproxy import tls

    targets = Targets()
    tunnels = Tunnels(targets)
    flow = connect_flow("api.openai.com")
    tunnels.http_connect(flow)
    ctx = context.Context(flow.client_conn, options.Options())
    ctx.server.sni = "evil.test"
    hello = tls.ClientHelloData(ctx, None)  # type: ignore[arg-type]
    tunnels.tls_clienthello(hello)
    assert ctx.server.sni == "api.openai.com" and not hello.ignore_connection


def test_upstream_proxy_credentials_go_on_connect_only_to_the_upstream() -> None:
    tunnels = Tunnels(Targets(), upstream_auth="corp:pw")
    flow = connect_flow("example.com")
    tunnels.http_connect_upstream(flow)
    assert flow.request.headers["Proxy-Authorization"] == basic("corp", "pw")


# -- injection -----------------------------------------------------------------------------------------------------


def test_injects_replacing_the_placeholder_and_strips_proxy_headers() -> None:
    rig = Rig(Route(OPENAI))
    flow = rig.request(
        rig.tunnel(https_flow(headers={"Proxy-Connection": "keep-alive", "proxy-authorization": "Basic x"}))
    )
    assert flow.response is None
    assert flow.request.headers.get_all("Authorization") == [f"Bearer {SECRET}-default"]
    assert not [n for n in flow.request.headers if n.lower().startswith("proxy-")]
    assert flow.request.stream is True
    assert rig.headers.calls == [("openai", "default")]
    assert rig.lines.lines == ["authsome: injected    openai/default GET api.openai.com/v1/models"]


def test_connection_header_picks_a_connection_and_never_goes_upstream() -> None:
    rig = Rig(Route(OPENAI))
    flow = rig.request(rig.tunnel(https_flow(headers={CONNECTION_HEADER: "work"})))
    assert rig.headers.calls == [("openai", "work")]
    assert CONNECTION_HEADER not in flow.request.headers
    bad = rig.request(rig.tunnel(https_flow(headers={CONNECTION_HEADER: "../x"})))
    assert bad.response is not None and bad.response.status_code == 400
    assert rig.headers.calls == [("openai", "work")]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"host": "evil.test"}, "Host header names 'evil.test'"),
        ({"host": "api.openai.com:8443"}, "Host header names 'api.openai.com:8443'"),
        ({"sni": "evil.test"}, "TLS SNI names 'evil.test'"),
        ({"authority": "evil.test:443"}, "request URL names 'evil.test:443'"),
        ({"upstream_sni": "evil.test"}, "upstream SNI names 'evil.test'"),
        ({"no_host": True}, "no Host header"),
    ],
)
def test_destination_mismatch_is_refused_with_421(change: dict[str, Any], why: str) -> None:
    rig = Rig(Route(OPENAI))
    flow = rig.tunnel(https_flow())
    if "host" in change:
        flow.request.headers["Host"] = change["host"]
    if "sni" in change:
        flow.client_conn.sni = change["sni"]
    if "authority" in change:
        flow.request.authority = change["authority"]
    if "upstream_sni" in change:
        flow.server_conn.sni = change["upstream_sni"]
    if "no_host" in change:
        del flow.request.headers["Host"]
    rig.request(flow)
    assert flow.response is not None and flow.response.status_code == 421
    assert why in body(flow)["reason"]
    assert flow.request.headers["Authorization"] == "Bearer authsome-proxy-managed"
    assert rig.headers.calls == []


def test_equivalent_names_are_not_a_mismatch() -> None:
    rig = Rig(Route(OPENAI))
    flow = rig.tunnel(https_flow(headers={"Host": "API.OpenAI.com.:443"}, sni="api.openai.com."))
    flow.request.authority = "api.openai.com"
    rig.request(flow)
    assert flow.response is None and flow.request.headers["Authorization"].endswith("-default")


def test_plain_http_is_forwarded_without_a_credential() -> None:
    rig = Rig(Route(OPENAI))
    flow = https_flow()
    flow.request.scheme = "http"
    rig.request(flow)  # no CONNECT: an absolute-form plain request
    assert flow.response is None
    assert flow.request.headers["Authorization"] == "Bearer authsome-proxy-managed"
    assert rig.lines.lines == ["authsome: passthrough - GET api.openai.com/v1/models (plain-http)"]
    inside = rig.tunnel(https_flow())
    inside.request.scheme = "http"  # plain HTTP inside a CONNECT tunnel
    rig.request(inside)
    assert inside.request.headers["Authorization"] == "Bearer authsome-proxy-managed"


def test_unrouted_host_passes_through_untouched() -> None:
    rig = Rig(Route(OPENAI))
    flow = rig.request(rig.tunnel(https_flow("example.com")))
    assert flow.response is None and flow.request.headers["Authorization"] == "Bearer authsome-proxy-managed"
    assert rig.headers.calls == []


def test_ambiguous_host_is_forwarded_unchanged_and_warned_once() -> None:
    rig = Rig(Route(TWIN), Route(TWIN2), verbose=False)
    for _ in range(3):
        flow = rig.request(rig.tunnel(https_flow("api.twin.test")))
        assert flow.response is None
        assert flow.request.headers["Authorization"] == "Bearer authsome-proxy-managed"
    assert rig.lines.lines == ["authsome: ambiguous host match: api.twin.test claimed by twin, twin2"]
    assert rig.headers.calls == []


def test_missing_credential_fails_closed_with_json_naming_the_fix() -> None:
    err = CredentialMissing("no credential stored for github/default", "run `authsome login github`")
    rig = Rig(Route(GITHUB), headers=Headers(err))
    flow = rig.request(rig.tunnel(https_flow("api.github.com", "/user")))
    assert flow.response is not None and flow.response.status_code == 401
    assert flow.response.headers[ERROR_HEADER] == "credential_unavailable"
    data = body(flow)
    assert data["provider"] == "github" and data["connection"] == "default"
    assert data["fix"] == data["fix_command"] == "authsome login github"
    assert "no credential stored for github/default" in data["reason"]
    assert data["error"]["message"].startswith("authsome: no usable credential for github/default")
    assert flow.request.headers["Authorization"] == "Bearer authsome-proxy-managed"
    assert rig.lines.lines[-1].startswith("authsome: refused     github/default GET api.github.com/user")


def test_refresh_failure_without_command_in_hint_suggests_login() -> None:
    rig = Rig(Route(GITHUB, "work"), headers=Headers(RefreshFailed("token endpoint said invalid_grant", None)))
    data = body(rig.request(rig.tunnel(https_flow("api.github.com"))))
    assert data["fix_command"] == "authsome login github --connection work"


def test_unexpected_error_fails_closed_without_its_message() -> None:
    rig = Rig(Route(OPENAI), headers=Headers(RuntimeError(f"boom {SECRET}")))
    flow = rig.request(rig.tunnel(https_flow()))
    assert flow.response is not None and flow.response.status_code == 502
    assert SECRET not in flow.response.text and "RuntimeError" in flow.response.text


def test_policy_denies_before_the_credential_is_read() -> None:
    rig = Rig(Route(OPENAI), allow=("openai:GET /v1/models",))
    assert rig.request(rig.tunnel(https_flow())).response is None
    denied = rig.request(rig.tunnel(https_flow(path="/v1/files")))
    assert denied.response is not None and denied.response.status_code == 403
    assert rig.headers.calls == [("openai", "default")]


def test_untrusted_upstream_gets_a_502_that_says_so() -> None:
    rig = Rig(Route(OPENAI))
    flow = rig.tunnel(https_flow())
    flow.server_conn.error = "Certificate verify failed: unable to get local issuer certificate"
    rig.request(flow)
    assert flow.response is not None and flow.response.status_code == 502
    data = body(flow)
    assert data["error"]["code"] == "upstream_untrusted" and "--upstream-ca" in data["fix"]
    assert "api.openai.com:443 is not trusted" in data["reason"]


def test_streams_responses_and_reports_without_secrets_or_queries() -> None:
    rig = Rig(Route(OPENAI))
    flow = rig.request(rig.tunnel(https_flow(path="/v1/models?key=querysecret")))
    flow.response = tutils.tresp()
    rig.injector.responseheaders(flow)
    assert callable(flow.response.stream)  # streamed through the echo redactor, never buffered
    rig.finish(flow)
    assert rig.audited and rig.audited[0]["decision"] == "injected" and rig.audited[0]["status"] == 200
    text = json.dumps(rig.audited) + "\n".join(rig.lines.lines)
    assert SECRET not in text and "querysecret" not in text


def test_websocket_history_is_bounded() -> None:
    rig = Rig(Route(OPENAI))
    flow = tflow.twebsocketflow()
    assert flow.websocket is not None and len(flow.websocket.messages) > 1
    rig.injector.websocket_message(flow)
    assert len(flow.websocket.messages) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("API.example.com", ("api.example.com", 443)),
        ("api.example.com:8443", ("api.example.com", 8443)),
        ("[::1]:8443", ("::1", 8443)),
        ("[::1]", ("::1", 443)),
        ("a:b:c", None),
        ("host:", None),
        ("bad host", None),
    ],
)
def test_split_authority(value: str, expected: tuple[str, int] | None) -> None:
    assert split_authority(value, 443) == expected


def test_headers_are_reused_briefly_but_errors_never() -> None:
    rig = Rig(Route(OPENAI), ttl=60)
    for _ in range(3):
        rig.request(rig.tunnel(https_flow()))
    assert rig.headers.calls == [("openai", "default")]
    uncached = Rig(Route(OPENAI), ttl=0)
    for _ in range(3):
        uncached.request(uncached.tunnel(https_flow()))
    assert len(uncached.headers.calls) == 3
    failing = Rig(Route(OPENAI), headers=Headers(CredentialMissing("gone", None)), ttl=60)
    for _ in range(2):
        assert failing.request(failing.tunnel(https_flow())).response is not None
    assert len(failing.headers.calls) == 2


def test_plain_http_through_a_chained_proxy_carries_its_credentials() -> None:
    from mitmproxy.proxy.mode_specs import ProxyMode

    tunnels = Tunnels(Targets(), upstream_auth="corp:pw")
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse("upstream:http://corp.test:3128")
    tunnels.requestheaders(flow)
    assert flow.request.headers["Proxy-Authorization"] == basic("corp", "pw")
    tls_flow = https_flow()
    tls_flow.client_conn.proxy_mode = ProxyMode.parse("upstream:http://corp.test:3128")
    tunnels.requestheaders(tls_flow)
    assert "Proxy-Authorization" not in tls_flow.request.headers
