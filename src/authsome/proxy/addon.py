"""The request addon: route, check the destination, ask for the headers, inject them — or refuse, loudly.

It never sees the store: it gets ``headers_for(provider, connection)``, which may block (a token refresh), so it runs
on a worker thread, never on mitmproxy's event loop. Any failure there becomes a JSON error response for the child
(fail closed), never an unauthenticated forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from mitmproxy import connection, http, tcp, tls
from mitmproxy.proxy import server_hooks

from authsome.errors import AuthsomeError, CredentialMissing
from authsome.models import DEFAULT_CONNECTION
from authsome.policy import METHOD_OVERRIDE_HEADERS, Policy
from authsome.providers.hosts import canonical_host, split_host_port
from authsome.proxy.auth import LOCAL_REFUSAL, PRINCIPAL, REFUSED, Principal
from authsome.proxy.redact import (
    EncodedRedactor,
    StreamRedactor,
    UnsupportedEncoding,
    content_codings,
    redact,
    secrets_of,
)
from authsome.proxy.report import ERROR_HEADER, Reporter, RequestRecord, error_body, path_only
from authsome.proxy.routing import Ambiguous, Decision, Match, NoMatch, Router
from authsome.proxy.tunnel import Address, Targets
from authsome.proxy.upstream import verdict as upstream_verdict

HeadersFor = Callable[[str, str], Mapping[str, str]]
CONNECTION_HEADER = "X-Authsome-Connection"
ONBOARDING_HOST = "mitm.it"
_CONNECTION_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_RECORD = "authsome.record"
_START = "authsome.start"
_SECRETS = "authsome.secrets"
_CONNECTION_NAME = CONNECTION_HEADER.lower().encode()
_OVERRIDE_NAMES = frozenset(name.lower().encode() for name in METHOD_OVERRIDE_HEADERS)


def _method_overrides(request: http.Request) -> list[str]:
    """The methods a request's override headers name (the policy judges each as well as its own method)."""
    return [value for name in METHOD_OVERRIDE_HEADERS for value in request.headers.get_all(name)]


def split_authority(value: str, default_port: int) -> Address | None:
    """``host[:port]`` (IPv6 in brackets) as canonical (host, port) (:func:`split_host_port`), or None."""
    try:
        return split_host_port(value, default_port)
    except ValueError:
        return None


def error_response(status: int, code: str, message: str, **details: object) -> http.Response:
    """A JSON error for the child. ``error.message`` is what SDKs (OpenAI's, Anthropic's…) show their user."""
    return http.Response.make(
        status,
        error_body(code, message, **details),
        {"Content-Type": "application/json", ERROR_HEADER: code, "Cache-Control": "no-store"},
    )


def fix_command(provider: str, connection: str, error: AuthsomeError) -> str | None:
    """The command that fixes an unusable credential: the one the error carries; for a missing credential, or an
    error that says nothing, ``authsome login`` for that very connection; None when the hint is the fix (a network
    error, say)."""
    if error.fix_command:
        return error.fix_command
    if isinstance(error, CredentialMissing) or not error.hint:
        flag = "" if connection == DEFAULT_CONNECTION else f" --connection {connection}"
        return f"authsome login {provider}{flag}"
    return None


def _principal(flow: http.HTTPFlow) -> Principal | None:
    """Who sent the request (set by :class:`~authsome.proxy.auth.ProxyAuth`), or None (unit tests, no auth addon)."""
    found = flow.metadata.get(PRINCIPAL)
    return found if isinstance(found, Principal) else None


def _has_body(flow: http.HTTPFlow) -> bool:
    response = flow.response
    assert response is not None
    return flow.request.method != "HEAD" and response.status_code >= 200 and response.status_code not in (204, 304)


def _committed(done: Future[None] | None) -> Awaitable[None] | None:
    """What a hook returns so that mitmproxy answers once the audit record is committed; a failed commit was reported
    by the trail and does not hold the answer back."""
    if done is None:
        return None

    async def wait() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(done)

    return wait()


class _Replace:
    """A ``response.stream`` that sends ``body`` in place of whatever the server sends."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body

    def __call__(self, chunk: bytes) -> bytes:
        body, self.body = self.body, None
        return body or b""


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
        self._connect_errors: dict[str, str] = {}

    def done(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def forget_credentials(self) -> None:
        """Ask ``headers_for`` again at the next request (a credential changed elsewhere: another gateway replica)."""
        self._cache.clear()

    # -- requests ------------------------------------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Decide, and inject or refuse. Returns an awaitable only when the credential must be fetched (not cached):
        mitmproxy then waits for it before it sends the request on."""
        request = flow.request
        if flow.response is not None:  # refused before us: unknown (407), or an agent kept off this host (audited)
            if flow.metadata.get(REFUSED) == "destination_forbidden":
                where = split_authority(request.pretty_host, request.port) or (request.pretty_host, request.port)
                reason = f"destination_forbidden: {LOCAL_REFUSAL}"
                record = RequestRecord("refused", request.method, *where, path_only(request.path), reason=reason)
                self._note(flow, record)
            return None
        flow.metadata[_START] = time.monotonic()
        names = {name.lower() for name, _ in request.headers.fields}  # (one pass; most requests have none of these)
        if any(name.startswith(b"proxy-") for name in names):
            for name in {n for n in request.headers if n.lower().startswith("proxy-")}:
                del request.headers[name]  # never upstream: the per-run proxy credential must not leak
        chosen = request.headers.pop(CONNECTION_HEADER, None) if _CONNECTION_NAME in names else None
        overrides = _method_overrides(request) if not _OVERRIDE_NAMES.isdisjoint(names) else []
        target = self.targets.get(flow.client_conn.id)
        if target is None or request.scheme != "https":
            where = split_authority(request.pretty_host, request.port) or (request.pretty_host, request.port)
            self._passthrough(flow, where, "plain-http" if request.scheme == "http" else "not-tunnelled")
            return None
        principal = _principal(flow)
        router = principal.router if principal is not None else self.router  # an agent's own routes at the gateway
        decision = router.route("https", target[0], target[1], request.path)
        failure = self._upstream_failure(flow)
        if failure is not None:
            self._upstream_failed(flow, target, decision, failure)
            return None
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
            fetching = self._inject(flow, target, decision, chosen, overrides)
            if fetching is not None:
                return self._stream_request_after(fetching, flow, target)
        self._stream_request(flow, target)
        return None

    def _stream_request(self, flow: http.HTTPFlow, target: Address) -> None:
        if flow.response is None and target[0] != ONBOARDING_HOST:
            flow.request.stream = True  # uploads go through without being buffered

    async def _stream_request_after(self, fetching: Awaitable[None], flow: http.HTTPFlow, target: Address) -> None:
        await fetching
        self._stream_request(flow, target)

    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Stream the response (see :meth:`_stream`). With a trail shared by replicas, the answer (every answer passes
        here, the proxy's own included) goes out once the request's audit record is committed."""
        self._stream(flow)
        return self._answering(flow)

    def _stream(self, flow: http.HTTPFlow) -> None:
        """Stream every response (server-sent events as they are sent, downloads without buffering); a response to
        an injected request is streamed through a redactor so the credential never comes back to the child."""
        response = flow.response
        if response is None:
            return
        secrets: list[bytes] | None = flow.metadata.get(_SECRETS)
        if secrets:
            fields = response.headers.fields
            values = b"\n".join(value for _, value in fields)
            if any(secret in values for secret in secrets):
                response.headers.fields = tuple((name, redact(value, secrets)) for name, value in fields)
            coding = response.headers.get("content-encoding", "")
            if not content_codings(coding) or not _has_body(flow):
                response.stream = StreamRedactor(secrets)
                return
            try:  # compressed although the request asked for identity: decode, redact, encode again
                response.stream = EncodedRedactor(secrets, coding, lambda why: self._cut(flow, why))
            except UnsupportedEncoding:
                self._refuse_response(flow, coding)
                return
            response.headers.pop("content-length", None)  # the length changes: chunked to an HTTP/1.1 client instead
            if flow.request.http_version == "HTTP/1.1":
                response.headers["transfer-encoding"] = "chunked"
        elif not response.stream:
            response.stream = True

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._finish(flow)  # (mitmproxy sends the child its error response after this hook)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Keep only the newest message in memory: a long-lived socket must not grow without bound."""
        if flow.websocket is not None and len(flow.websocket.messages) > 1:
            del flow.websocket.messages[:-1]

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        if len(flow.messages) > 1:
            del flow.messages[:-1]

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Kept per client: a chained proxy that cannot be reached fails its own connection, not the server's."""
        self._connect_errors[data.client.id] = str(data.server.error or "connection failed")

    def tls_failed_server(self, data: tls.TlsData) -> None:
        """Likewise for the TLS of an ``https://`` chained proxy (the server's own failure is on its connection)."""
        conn = data.conn
        if conn is not data.context.server and isinstance(conn, connection.Server) and conn.address:
            where = f"{conn.address[0]}:{conn.address[1]}"
            self._connect_errors[data.context.client.id] = f"the upstream proxy {where}: {conn.error}"

    def client_disconnected(self, client: connection.Client) -> None:
        self._connect_errors.pop(client.id, None)

    # -- decisions -----------------------------------------------------------------------------------------------
    def _inject(
        self, flow: http.HTTPFlow, target: Address, match: Match, chosen: str | None, overrides: list[str]
    ) -> Awaitable[None] | None:
        """Check the request, then inject the connection's headers: at once when they are cached, else in the
        awaitable returned (the credential is fetched on a worker thread)."""
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
                return None
            connection = chosen
        principal = _principal(flow)
        if principal is not None and not principal.may_use(match.provider, connection):
            self._refuse(
                flow,
                403,
                target,
                match.provider,
                connection,
                "connection_denied",
                f"agent {principal.name} may not use {match.provider}/{connection}",
                f"give it that connection: `authsome agent create {principal.name} --force --connection "
                f"{match.provider}={connection} …` (with the rest of its rights)",
            )
            return None
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
            return None
        policy = principal.policy if principal is not None else self.policy
        verdict = policy.check(match.provider, connection, request.method, path_only(request.path), overrides)
        if not verdict.allowed:
            self._refuse(
                flow,
                403,
                target,
                match.provider,
                connection,
                "policy_denied",
                f"{verdict.reason} (rules from {policy.source})",
                "widen --allow / --policy if this request is intended",
            )
            return None
        cached = self._cached_headers(match.provider, connection)
        if cached is None:
            return self._inject_fetched(flow, target, match, connection)
        self._add_headers(flow, target, match, connection, cached)
        return None

    async def _inject_fetched(self, flow: http.HTTPFlow, target: Address, match: Match, connection: str) -> None:
        try:
            headers = await self._fetch_headers(match.provider, connection)
        except AuthsomeError as exc:
            command = fix_command(match.provider, connection, exc)
            fix = command or exc.hint or "run `authsome doctor`"
            self._refuse(
                flow,
                401,
                target,
                match.provider,
                connection,
                "credential_unavailable",
                f"no usable credential for {match.provider}/{connection}: {exc.message}",
                fix,
                fix_command=command,
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
        self._add_headers(flow, target, match, connection, headers)

    def _add_headers(
        self, flow: http.HTTPFlow, target: Address, match: Match, connection: str, headers: Mapping[str, str]
    ) -> None:
        request = flow.request
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

    def _cached_headers(self, provider: str, connection: str) -> Mapping[str, str] | None:
        """The connection's headers from ``headers_for`` within the last ``credential_ttl`` seconds, or None."""
        cached = self._cache.get((provider, connection))
        if cached is not None and time.monotonic() - cached[0] < self.credential_ttl:
            return cached[1]
        return None

    async def _fetch_headers(self, provider: str, connection: str) -> Mapping[str, str]:
        """``headers_for`` on a worker thread, its answer kept for ``credential_ttl`` seconds (errors never are)."""
        key = (provider, connection)
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

    def _upstream_failure(self, flow: http.HTTPFlow) -> tuple[str, bool] | None:
        """Why the tunnel's upstream cannot take this request, and whether that is the server itself; None when it
        can.

        The upstream TLS handshake comes before the child's (``_ServerTlsFirst`` in the server); when it failed, the
        child's handshake went on anyway so that its request could be answered here, with the cause.
        """
        server = flow.server_conn
        if server.error:
            return str(server.error), True
        if server.tls and not server.tls_established:  # the chained proxy's own connection failed
            return self._connect_errors.get(flow.client_conn.id) or "the connection failed", False
        return None

    def _upstream_failed(
        self, flow: http.HTTPFlow, target: Address, decision: Decision, failure: tuple[str, bool]
    ) -> None:
        cause, the_server = failure
        code, fix = upstream_verdict(cause)
        if code == "upstream_untrusted" and the_server:
            message = f"the upstream server {target[0]}:{target[1]} is not trusted ({cause})"
        else:
            message = f"cannot reach the upstream server {target[0]}:{target[1]} ({cause})"
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

    def _cut(self, flow: http.HTTPFlow, why: str) -> None:
        """End a response whose body cannot be checked for the credential: the child sees a broken transfer."""
        record: RequestRecord | None = flow.metadata.get(_RECORD)
        if record is not None:
            record.reason = f"{record.reason or ''}; cut: {why}".lstrip("; ")
        self.reporter.info(
            f"cut         {flow.request.method} {flow.request.pretty_host}{path_only(flow.request.path)} ({why})",
            record,
        )
        if flow.killable:
            flow.kill()  # type: ignore[no-untyped-call]

    def _refuse_response(self, flow: http.HTTPFlow, coding: str) -> None:
        """Answer the child with an error instead of a response whose coding cannot be checked for the credential."""
        record: RequestRecord | None = flow.metadata.get(_RECORD)
        reason = f"the upstream server answered with Content-Encoding {coding!r}, which authsome cannot check"
        fix = "ask the server for an uncompressed (identity) or gzip, deflate, br or zstd response"
        error = error_response(
            502,
            "upstream_encoding",
            f"{reason}. Fix: {fix}",
            provider=record.provider if record else None,
            connection=record.connection if record else None,
            reason=reason,
            fix=fix,
        )
        body = error.raw_content or b""
        error.stream = _Replace(body)
        flow.response = error
        if record is not None:
            record.decision = "refused"
            record.reason = f"upstream_encoding: {reason}"
            self.reporter.decided(record)

    def _passthrough(self, flow: http.HTTPFlow, target: Address, reason: str) -> None:
        self._note(
            flow,
            RequestRecord(
                "passthrough", flow.request.method, target[0], target[1], path_only(flow.request.path), reason=reason
            ),
        )

    def _note(self, flow: http.HTTPFlow, record: RequestRecord) -> None:
        principal = _principal(flow)
        record.agent = principal.name if principal is not None else None
        flow.metadata[_RECORD] = record
        self.reporter.decided(record)

    def _answering(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """With a :class:`~authsome.proxy.report.DurableAudit`: commit the record as the response starts (its status,
        the time to its headers) and have mitmproxy wait for the commit before it sends the response."""
        record: RequestRecord | None = flow.metadata.get(_RECORD)
        if record is None or flow.response is None or not self.reporter.commits_on_answer:
            return None
        record.status = flow.response.status_code
        start = flow.metadata.get(_START)
        if isinstance(start, float):
            record.duration_ms = round((time.monotonic() - start) * 1000, 1)
        return _committed(self.reporter.answering(record))

    def _finish(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        record: RequestRecord | None = flow.metadata.pop(_RECORD, None)
        if record is None:
            return None
        if flow.response is not None:
            record.status = flow.response.status_code
        elif flow.error is not None and record.decision != "refused":
            self.reporter.info(f"{record.line()}: failed: {flow.error.msg}", record)  # the decision was shown; its end
            record.reason = f"{record.reason or ''}; error: {flow.error.msg}".lstrip("; ")
        start = flow.metadata.get(_START)
        if isinstance(start, float):
            record.duration_ms = round((time.monotonic() - start) * 1000, 1)
        answer = _committed(self.reporter.answering(record))  # an error, answered after this hook (a shared trail)
        self.reporter.finished(record)
        return answer
