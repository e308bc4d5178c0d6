"""Redaction does not depend on the upstream's manners.

The proxy asks for ``identity``; this stand-in compresses anyway (gzip, deflate with and without its zlib header, br,
zstd), echoing the credential it received, in one piece or as a stream whose chunks split it; it also answers with a
coding nobody knows and with a body that does not decode. The child (curl and httpx, which decode every one of these
codings) must never see the credential. Method rules hold against method-override headers, which such a server obeys.
"""

from __future__ import annotations

import json
import ssl
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
import trustme
import zstandard
from tests.tls_server import TlsStandIn, on_thread

from authsome.policy import build_policy

from .conftest import SECRETS, RunFn, py

pytestmark = pytest.mark.e2e

KEY = f"{SECRETS['openai']}-default"  # what the test credential source gives openai/default


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


ENCODERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", lambda d: zlib.compress(d, wbits=31)),
    "deflate": ("deflate", zlib.compress),
    "deflate-raw": ("deflate", _deflate_raw),
    "br": ("br", brotli.compress),
    "zstd": ("zstd", zstandard.ZstdCompressor(write_checksum=True).compress),
}


@dataclass
class Rude:
    """What the rude server saw."""

    port: int
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, headers: dict[str, str], chunks: list[bytes]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if len(chunks) == 1:  # one piece: framed by Content-Length, which the proxy must drop when it re-encodes
            self.send_header("Content-Length", str(len(chunks[0])))
            self.end_headers()
            self.wfile.write(chunks[0])
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _handle(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        overrides = ("x-http-method-override", "x-http-method", "x-method-override")
        method = next((headers[h] for h in overrides if h in headers), self.command)  # a server that obeys them
        self.server.state.seen.append((method, self.path, headers))
        if int(headers.get("content-length") or 0):
            self.rfile.read(int(headers["content-length"]))
        echo = json.dumps({"method": method, "you_sent": headers.get("authorization", "")}).encode()
        _, kind, coding = self.path.split("/", 2)  # /<kind>/<coding>
        if kind == "plain":
            return self._send(200, {"Content-Type": "application/json"}, [echo])
        if coding == "x-custom":
            return self._send(200, {"Content-Type": "application/json", "Content-Encoding": "x-custom"}, [echo])
        name, encode = ENCODERS[coding]
        headers_out = {"Content-Type": "application/json", "Content-Encoding": name}
        body = encode(echo)
        if kind == "once":
            return self._send(200, headers_out, [body])
        if kind == "stream":  # many small chunks: the compressed credential is split between them
            return self._send(200, headers_out, [body[i : i + 7] for i in range(0, len(body), 7)])
        if kind == "broken":  # a good start, then bytes that do not decode
            return self._send(200, headers_out, [body[: len(body) // 2], b"\xff" * 64 + KEY.encode()])
        self._send(404, {}, [])

    do_GET = do_POST = do_DELETE = _handle


class _Server(TlsStandIn):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(_Handler, context)
        self.state = Rude(self.port)


@pytest.fixture
def rude(test_ca: trustme.CA) -> Iterator[Rude]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    test_ca.issue_cert("api.openai.com").configure_cert(context)
    with on_thread(_Server(context)) as server:
        yield server.state


def via_rude(run: RunFn, rude: Rude, command: list[str], **options: Any) -> Any:
    return run(command, resolve={"api.openai.com:443": f"127.0.0.1:{rude.port}"}, **options)


@pytest.mark.parametrize("kind", ["once", "stream"])
@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_a_compressed_echo_is_redacted(run: RunFn, rude: Rude, coding: str, kind: str) -> None:
    result = via_rude(run, rude, ["curl", "-sS", "--compressed", f"https://api.openai.com/{kind}/{coding}"])
    assert result.code == 0, result.err
    assert rude.seen[-1][2]["authorization"] == f"Bearer {KEY}"  # upstream got the key (asked for identity)…
    assert rude.seen[-1][2]["accept-encoding"] == "identity"
    assert KEY not in result.out  # …and the child, decoding what it got, never sees it
    assert json.loads(result.out)["you_sent"].startswith("[redacted]")


def test_python_clients_decode_the_re_encoded_body(run: RunFn, rude: Rude) -> None:
    script = """
import httpx
for coding in ("gzip", "br", "zstd"):
    response = httpx.get(f"https://api.openai.com/stream/{coding}", timeout=10)
    print(response.headers["content-encoding"], response.json()["you_sent"])
"""
    result = via_rude(run, rude, py(script))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [line.split()[0] for line in lines] == ["gzip", "br", "zstd"]
    assert all("[redacted]" in line for line in lines) and KEY not in result.out


def test_an_unknown_coding_is_refused(run: RunFn, rude: Rude) -> None:
    command = ["curl", "-sS", "-w", "\n%{http_code}", "https://api.openai.com/once/x-custom"]
    records: list[dict[str, object]] = []
    result = via_rude(run, rude, command, verbose=True, audit=records.append)
    body, _, status = result.out.rpartition("\n")
    assert status == "502" and KEY not in result.out
    assert json.loads(body)["error"]["code"] == "upstream_encoding"
    assert "Content-Encoding 'x-custom'" in json.loads(body)["reason"]
    assert "refused     openai/default GET api.openai.com/once/x-custom (upstream_encoding: " in result.err
    assert [r["decision"] for r in records] == ["refused"]


def test_a_body_that_does_not_decode_is_cut(run: RunFn, rude: Rude) -> None:
    records: list[dict[str, object]] = []
    command = ["curl", "-sS", "--compressed", "https://api.openai.com/broken/gzip"]
    result = via_rude(run, rude, command, verbose=True, audit=records.append)
    assert result.code != 0  # a broken transfer, never bytes that were not checked
    assert KEY not in result.out
    assert "cut         GET api.openai.com/broken/gzip (the gzip response body does not decode" in result.err
    assert "cut: the gzip response body does not decode" in str(records[0]["reason"])


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
def test_a_method_override_is_judged_as_the_method_it_asks_for(run: RunFn, rude: Rude, header: str) -> None:
    script = (
        "curl -sS -o /dev/null -w '%{http_code}\\n' -X POST https://api.openai.com/plain/x; "
        f"curl -sS -o /dev/null -w '%{{http_code}}\\n' -X POST -H '{header}: DELETE' https://api.openai.com/plain/x"
    )
    result = via_rude(run, rude, ["sh", "-c", script], policy=build_policy(["openai:POST /plain/**"]), verbose=True)
    assert result.out.split() == ["200", "403"]
    assert [method for method, _, _ in rude.seen] == ["POST"]  # the DELETE never reached the server
    assert "no rule allows DELETE /plain/x (asked for by a method-override header on POST)" in result.err
    allowed = via_rude(run, rude, ["sh", "-c", script], policy=build_policy(["openai:POST,DELETE /plain/**"]))
    assert allowed.out.split() == ["200", "200"]
    assert [method for method, _, _ in rude.seen] == ["POST", "POST", "DELETE"]
