"""A one-shot HTTP server on 127.0.0.1 for the OAuth redirect and the API-key form.

The server hands every request to a handler, which answers with a :class:`Reply`. A reply that carries a ``result``
(or an ``error``) *consumes the one shot*: the server records it, answers that request and stops serving. Any other
reply (a form page, a 400 for a wrong state, a 404 for a wrong token) is sent and the server keeps waiting, so a
stray or hostile request cannot end the flow. Requests whose ``Host`` is not this listener are refused before the
handler sees them (DNS-rebinding), request lines are never logged (they can carry an authorization code), and every
page is sent with ``no-store``/``no-referrer`` and a strict Content-Security-Policy.

    with OneShotServer(handler) as server:         # port 0: the OS picks a free port
        ui.open_browser(server.url("/" + server.token + "/"))
        result = server.wait(timeout=300)
"""

from __future__ import annotations

import errno
import secrets
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit

from authsome.errors import AuthsomeError, UsageError

T = TypeVar("T")

LOOPBACK_HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}


def new_token() -> str:
    """A random URL-safe token (256 bits) for a URL path or an OAuth ``state``."""
    return secrets.token_urlsafe(32)


def tokens_equal(a: str | None, b: str) -> bool:
    """Constant-time comparison of a received token with the expected one."""
    return a is not None and secrets.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Request:
    """One request as the handler sees it: method, path, decoded query and (for a POST) the form fields."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # query and form can hold codes and keys
        return f"Request({self.method} {self.path})"


@dataclass(frozen=True)
class Reply(Generic[T]):
    """The handler's answer. Setting ``result`` or ``error`` consumes the one shot."""

    status: int = 200
    body: str = ""
    content_type: str = "text/html; charset=utf-8"
    result: T | None = None
    error: AuthsomeError | None = None

    @property
    def final(self) -> bool:
        return self.result is not None or self.error is not None


Handler = Callable[[Request], Reply[T]]


class OneShotServer(Generic[T]):
    """Serve ``handler`` on 127.0.0.1 until one reply carries a result or an error, then stop."""

    def __init__(self, handler: Handler[T], *, port: int = 0, request_timeout: float = 10.0) -> None:
        self.handler = handler
        self.token = new_token()
        self._requested_port = port
        self._request_timeout = request_timeout
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outcome: Reply[T] | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> OneShotServer[T]:
        httpd = _Server((LOOPBACK_HOST, self._requested_port), _make_handler_class(self), False)
        try:
            httpd.server_bind()
            httpd.server_activate()
        except OSError as exc:
            httpd.server_close()
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"port {self._requested_port} on {LOOPBACK_HOST} is already in use",
                    "stop whatever listens there or pass another port (e.g. --redirect-port)",
                ) from None
            raise UsageError(f"cannot listen on {LOOPBACK_HOST}:{self._requested_port}: {exc.strerror}") from None
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening (idempotent). The port is free when this returns."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OneShotServer[T]:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- addresses -------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}{path}"

    # -- the one shot ----------------------------------------------------------------------------------------------
    def offer(self, request: Request) -> Reply[T]:
        """Hand a request to the handler as if it had arrived over HTTP (used for a pasted redirect URL)."""
        with self._lock:
            if self._done.is_set():
                return Reply(410, _GONE)
            reply = self.handler(request)
            if reply.final:
                self._outcome = reply
                self._done.set()
            return reply

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> T:
        """Block until the one shot is consumed; return its result, raise its error, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while not self._done.wait(timeout=min(0.25, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise TimeoutError("no response arrived in time")
        outcome = self._outcome
        assert outcome is not None
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    def _host_ok(self, host: str | None) -> bool:
        return host in (f"{LOOPBACK_HOST}:{self.port}", f"localhost:{self.port}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup (getfqdn)
        self.server_name = LOOPBACK_HOST
        self.server_port = int(self.server_address[1])


_GONE = "<!doctype html><title>Done</title><p>This page has already been used. You can close it.</p>"
_BAD_HOST = "<!doctype html><title>Refused</title><p>Unexpected Host header.</p>"


def _make_handler_class(server: OneShotServer[T]) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        timeout = server._request_timeout
        server_version = "authsome"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or "0")
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._send(Reply(413, "<!doctype html><p>Request too large.</p>"))
                return
            self._handle(self.rfile.read(length))

        def _handle(self, body: bytes) -> None:
            if not server._host_ok(self.headers.get("Host")):
                self._send(Reply(421, _BAD_HOST))
                return
            parts = urlsplit(self.path)
            form: dict[str, str] = {}
            if self.command == "POST":
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if ctype != "application/x-www-form-urlencoded":
                    self._send(Reply(415, "<!doctype html><p>Unsupported form encoding.</p>"))
                    return
                form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            request = Request(
                method=self.command,
                path=parts.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers={k.lower(): v for k, v in self.headers.items()},
                form=form,
            )
            try:
                reply = server.offer(request)
            except Exception:  # a handler bug must not leak a traceback (with codes) to stderr
                reply = Reply(500, "<!doctype html><p>Internal error.</p>")
            self._send(reply)

        def _send(self, reply: Reply[T]) -> None:
            data = reply.body.encode("utf-8")
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                for name, value in SECURITY_HEADERS.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (TimeoutError, OSError):
                pass
            self.close_connection = True

    return _Handler
