"""The request addon: route, check the destination, ask for the headers, inject them — or refuse, loudly.

It never sees the store: it gets ``headers_for(provider, connection)``, which may block (a token refresh), so it runs
on a worker thread, never on mitmproxy's event loop. Any failure there becomes a JSON error response for the child
(fail closed), never an unauthenticated forward.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from mitmproxy import http, tcp, tls
from mitmproxy.proxy import server_hooks

from authsome.errors import AuthsomeError
from authsome.models import DEFAULT_CONNECTION
from authsome.policy import Policy
from authsome.providers.hosts import canonical_host
from authsome.proxy.redact import StreamRedactor, redact, secrets_of
from authsome.proxy.report import Reporter, RequestRecord, path_only
from authsome.proxy.routing import Ambiguous, Decision, Match, NoMatch, Router
from authsome.proxy.tunnel import Address, Targets

HeadersFor = Callable[[str, str], Mapping[str, str]]
CONNECTION_HEADER = "X-Authsome-Connection"
ERROR_HEADER = "X-Authsome-Error"
ONBOARDING_HOST = "mitm.it"
_CONNECTION_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_COMMAND_RE = re.compile(r"`(authsome [^`]+)`")
_RECORD = "authsome.record"
_START = "authsome.start"
_SECRETS = "authsome.secrets"


def split_authority(value: str, default_port: int) -> Address | None:
    """``host[:port]`` (IPv6 in brackets) as canonical (host, port), or None when it does not parse."""
    host, port = value, default_port
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif ":" in value:
        host, _, raw = value.rpartition(":")
        if not raw.isdigit() or ":" in host:
            return None
        port = int(raw)
    try:
        return canonical_host(host), port
    except ValueError:
        return None


def error_response(status: int, code: str, message: str, **details: object) -> http.Response:
    """A JSON error for the child. ``error.message`` is what SDKs (OpenAI's, Anthropic's…) show their user."""
    body = {"error": {"type": "authsome_error", "code": code, "message": f"authsome: {message}"}, **details}
    return http.Response.make(
        status,
        json.dumps(body, indent=2).encode() + b"\n",
        {"Content-Type": "application/json", ERROR_HEADER: code, "Cache-Control": "no-store"},
    )


def fix_command(provider: str, connection: str, hint: str | None) -> str:
    """The command that fixes a missing credential: the one named in the error's hint, else ``authsome login``."""
    found = _COMMAND_RE.search(hint or "")
    if found:
        return found.group(1)
    flag = "" if connection == DEFAULT_CONNECTION else f" --connection {connection}"
    return f"authsome login {provider}{flag}"


class Injector:
    """mitmproxy addon: per-request routing, destination checks, policy and credential injection."""

    def __init__(
        self,
        router: Router,
        headers_for: HeadersFor,
        targets: Targets,
        reporter: Reporter,
        *,
        policy: Policy | None = None,
        credential_ttl: float = 2.0,
    ) -> None:
        self.router = router
        self.headers_for = headers_for
        self.targets = targets
        self.reporter = reporter
        self.policy = policy or Policy()
        self.credential_ttl = credential_ttl
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="authsome-credentials")
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, str]]] = {}
        self._tls_errors: dict[str, str] = {}

    def done(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- requests ------------------------------------------------------------------------------------------------
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # refused before us (407)
            return
        request = flow.request
        flow.metadata[_START] = time.monotonic()
        for name in {n for n in request.headers if n.lower().startswith("proxy-")}:
            del request.headers[name]  # never upstream: the per-run proxy credential must not leak
        chosen = request.headers.pop(CONNECTION_HEADER, None)
        target = self.targets.get(flow.client_conn.id)
        if target is None or request.scheme != "https":
            where = split_authority(request.pretty_host, request.port) or (request.pretty_host, request.port)
            self._passthrough(flow, where, "plain-http" if request.scheme == "http" else "not-tunnelled")
            return
        decision = self.router.route("https", target[0], target[1], request.path)
        if flow.server_conn.error:
            self._upstream_failed(flow, target, decision, flow.server_conn.error)
            return
        if isinstance(decision, Ambiguous):
            self.reporter.warn(decision.message)
            self._note(
                flow,
                RequestRecord(
                    "ambiguous",
                    request.method,
                    target[0],
                    target[1],
                    path_only(request.path),
                    reason=", ".join(decision.providers),
                ),
            )
        elif isinstance(decision, NoMatch):
            self._passthrough(flow, target, decision.reason)
        else:
            await self._inject(flow, target, decision, chosen)
        if flow.response is None and target[0] != ONBOARDING_HOST:
            request.stream = True  # uploads go through without being buffered

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Stream every response (server-sent events as they are sent, downloads without buffering); a response to
        an injected request is streamed through a redactor so the credential never comes back to the child."""
        response = flow.response
        if response is None:
            return
        secrets: list[bytes] | None = flow.metadata.get(_SECRETS)
        if secrets:
            response.headers.fields = tuple((name, redact(value, secrets)) for name, value in response.headers.fields)
            response.stream = StreamRedactor(secrets)
        elif not response.stream:
            response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Keep only the newest message in memory: a long-lived socket must not grow without bound."""
        if flow.websocket is not None and len(flow.websocket.messages) > 1:
            del flow.websocket.messages[:-1]

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        if len(flow.messages) > 1:
            del flow.messages[:-1]

    def tls_failed_server(self, data: tls.TlsData) -> None:
        self._tls_errors[data.conn.id] = str(data.conn.error or "TLS handshake failed")

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._tls_errors.pop(data.server.id, None)

    # -- decisions -----------------------------------------------------------------------------------------------
    async def _inject(self, flow: http.HTTPFlow, target: Address, match: Match, chosen: str | None) -> None:
        request = flow.request
        connection = match.connection
        if chosen is not None:
            if not _CONNECTION_RE.fullmatch(chosen):
                self._refuse(
                    flow,
                    400,
                    target,
                    match.provider,
                    chosen,
                    "bad_connection",
                    f"{CONNECTION_HEADER} {chosen!r} is not a connection name",
                    "use lowercase letters, digits, '-' or '_'",
                )
                return
            connection = chosen
        mismatch = self._mismatch(flow, target)
        if mismatch:
            self._refuse(
                flow,
                421,
                target,
                match.provider,
                connection,
                "destination_mismatch",
                mismatch,
                f"send the request to {target[0]} in the CONNECT, the TLS SNI and the Host header alike",
            )
            return
        verdict = self.policy.check(match.provider, connection, request.method, path_only(request.path))
        if not verdict.allowed:
            self._refuse(
                flow,
                403,
                target,
                match.provider,
                connection,
                "policy_denied",
                f"{verdict.reason} (rules from {self.policy.source})",
                "widen --allow / --policy if this request is intended",
            )
            return
        try:
            headers = await self._headers(match.provider, connection)
        except AuthsomeError as exc:
            fix = fix_command(match.provider, connection, exc.hint)
            self._refuse(
                flow,
                401,
                target,
                match.provider,
                connection,
                "credential_unavailable",
                f"no usable credential for {match.provider}/{connection}: {exc.message}",
                fix,
                fix_command=fix,
            )
            return
        except Exception as exc:  # fail closed; the message of an unknown error is not shown (it could hold data)
            self._refuse(
                flow,
                502,
                target,
                match.provider,
                connection,
                "credential_error",
                f"reading the credential for {match.provider}/{connection} failed ({type(exc).__name__})",
                "run again with --verbose, or check `authsome doctor`",
            )
            return
        for name, value in headers.items():
            request.headers[name] = value  # replaces the child's placeholder header of the same name
        flow.metadata[_SECRETS] = secrets_of(headers.values())
        request.headers["accept-encoding"] = "identity"  # so an echoed credential can be found and redacted
        self._note(
            flow,
            RequestRecord(
                "injected",
                request.method,
                target[0],
                target[1],
                path_only(request.path),
                match.provider,
                connection,
                reason=f"rule {match.rule}",
            ),
        )

    async def _headers(self, provider: str, connection: str) -> Mapping[str, str]:
        """``headers_for`` on a worker thread, its answer reused for ``credential_ttl`` seconds (errors never are)."""
        key = (provider, connection)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.credential_ttl:
            return cached[1]
        headers = await asyncio.get_running_loop().run_in_executor(self._pool, self.headers_for, provider, connection)
        if self.credential_ttl > 0:
            self._cache[key] = (time.monotonic(), dict(headers))
        return headers

    def _mismatch(self, flow: http.HTTPFlow, target: Address) -> str | None:
        """Why the names in this request disagree with the tunnel's CONNECT target, or None when they all agree."""
        host, port = target
        request = flow.request
        names: list[tuple[str, str | None]] = [
            ("Host header", request.host_header),
            ("request URL", request.authority or None),
        ]
        if names[0][1] is None:
            return "the request has no Host header"
        for what, value in names:
            if value is not None and split_authority(value, 443) != target:
                return f"{what} names {value!r}, but the tunnel goes to {host}:{port}"
        for what, sni in (("TLS SNI", flow.client_conn.sni), ("upstream SNI", flow.server_conn.sni)):
            if sni is not None and split_authority(sni, port) != target:
                return f"{what} names {sni!r}, but the tunnel goes to {host}"
        try:
            destination: Address | None = (canonical_host(request.host), request.port)
        except ValueError:
            destination = None
        if destination != target:
            return f"the request would go to {request.host}:{request.port}, not {host}:{port}"
        return None

    def _upstream_failed(self, flow: http.HTTPFlow, target: Address, decision: Decision, error: str) -> None:
        tls_error = self._tls_errors.get(flow.server_conn.id)
        if tls_error or "certificate" in error.lower():
            message = f"the upstream server {target[0]}:{target[1]} is not trusted ({tls_error or error})"
            fix = "if you trust it, pass --upstream-ca FILE or set SSL_CERT_FILE to a bundle holding its CA"
            code = "upstream_untrusted"
        else:
            message = f"cannot reach the upstream server {target[0]}:{target[1]} ({error})"
            fix = "check the network, DNS and any upstream proxy"
            code = "upstream_unreachable"
        provider, connection = (decision.provider, decision.connection) if isinstance(decision, Match) else (None, None)
        self._refuse(flow, 502, target, provider, connection, code, message, fix)

    def _refuse(
        self,
        flow: http.HTTPFlow,
        status: int,
        target: Address,
        provider: str | None,
        connection: str | None,
        code: str,
        reason: str,
        fix: str,
        *,
        fix_command: str | None = None,
    ) -> None:
        details: dict[str, object] = {"provider": provider, "connection": connection, "reason": reason, "fix": fix}
        if fix_command:
            details["fix_command"] = fix_command
        flow.response = error_response(status, code, f"{reason}. Fix: {fix}", **details)
        self._note(
            flow,
            RequestRecord(
                "refused",
                flow.request.method,
                target[0],
                target[1],
                path_only(flow.request.path),
                provider,
                connection,
                reason=f"{code}: {reason}",
            ),
        )

    def _passthrough(self, flow: http.HTTPFlow, target: Address, reason: str) -> None:
        self._note(
            flow,
            RequestRecord(
                "passthrough", flow.request.method, target[0], target[1], path_only(flow.request.path), reason=reason
            ),
        )

    def _note(self, flow: http.HTTPFlow, record: RequestRecord) -> None:
        flow.metadata[_RECORD] = record
        self.reporter.decided(record)

    def _finish(self, flow: http.HTTPFlow) -> None:
        record: RequestRecord | None = flow.metadata.pop(_RECORD, None)
        if record is None:
            return
        if flow.response is not None:
            record.status = flow.response.status_code
        elif flow.error is not None and record.decision != "refused":
            record.reason = f"{record.reason or ''}; error: {flow.error.msg}".lstrip("; ")
        start = flow.metadata.get(_START)
        if isinstance(start, float):
            record.duration_ms = round((time.monotonic() - start) * 1000, 1)
        self.reporter.finished(record)
