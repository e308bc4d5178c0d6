"""Fixtures for the flow unit tests: providers built in code, and a canned loopback server for odd answers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authsome.providers.schema import Provider, parse_provider

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@pytest.fixture
def api_key_provider() -> Callable[..., Provider]:
    """Build an API-key provider: ``api_key_provider(env_var="ACME_KEY", key_pattern=r"ak-[a-z0-9]{8}")``."""

    def make(name: str = "acme", display_name: str = "Acme", **api_key: Any) -> Provider:
        data = {
            "schema_version": 1,
            "name": name,
            "display_name": display_name,
            "auth_type": "api_key",
            "api_key": api_key,
        }
        return parse_provider(data)

    return make


class Canned:
    """A loopback HTTP server answering each path with a canned (status, JSON or text) reply, or a list of them used in
    turn; records every request as (method, path, body)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.replies: dict[str, Any] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, self.rfile.read(length)))
                reply = outer.replies.get(self.path.split("?")[0], (404, {"error": "not_found"}))
                if isinstance(reply, list):  # a sequence: one reply per request, the last one repeats
                    reply = reply.pop(0) if len(reply) > 1 else reply[0]
                status, body = reply
                if isinstance(body, str):
                    data, kind = body.encode(), "text/html"
                else:
                    data, kind = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def canned() -> Iterator[Canned]:
    """A stand-in server for the answers a real authorization server will not give (wrong issuer, HTML, 500…)."""
    server = Canned()
    yield server
    server.server.shutdown()
    server.server.server_close()
