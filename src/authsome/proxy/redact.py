"""Keep an injected credential from coming back to the child: a TRACE-like echo, a debug endpoint, an error page.

Pure and incremental: :class:`StreamRedactor` is fed response chunks and replaces every occurrence of the secrets,
including ones split across chunks. It holds back only a tail that could still be the start of a secret, so
server-sent events and other streams keep streaming.

The proxy asks for ``identity``, but a server may compress anyway. :class:`EncodedRedactor` then decodes the body
(``gzip``, ``deflate``, ``br``, ``zstd``) in bounded pieces, redacts them and encodes them again with the same coding,
flushed piece by piece so that streams still stream. Memory stays bounded whatever the server sends: zlib output is
asked for at most :data:`PIECE` bytes at a time; brotli and zstd are fed a few bytes at a time (at most about 16 MiB
and 8 MiB of output per call), with zstd's window capped at 8 MiB (RFC 8878). A coding it cannot decode raises
:class:`UnsupportedEncoding` (the proxy refuses the response); a body that does not decode ends the response.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any

MARKER = b"[redacted]"
MIN_SECRET = 8


def mask(secret: bytes) -> bytes:
    """A same-length stand-in (``[redacted]****…``), so Content-Length and chunk sizes stay true."""
    return (MARKER + b"*" * len(secret))[: len(secret)]


def secrets_of(header_values: Iterable[str]) -> list[bytes]:
    """The byte strings to hide: each injected header value and the credential inside it (after a scheme)."""
    out: set[bytes] = set()
    for value in header_values:
        for candidate in (value, value.rsplit(" ", 1)[-1]):
            if len(candidate) >= MIN_SECRET:
                out.add(candidate.encode())
    return sorted(out, key=len, reverse=True)  # longest first: "Bearer sk-…" before "sk-…"


def redact(data: bytes, secrets: Iterable[bytes]) -> bytes:
    """Every occurrence of every secret replaced by its :func:`mask`."""
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, mask(secret))
    return data


class StreamRedactor:
    """A mitmproxy ``response.stream`` callable: chunks in, redacted chunks out; ``b""`` marks the end."""

    def __init__(self, secrets: list[bytes]) -> None:
        self.secrets = secrets
        self.pending = b""
        self.redactions = 0

    def __call__(self, chunk: bytes) -> bytes:
        before = self.pending + chunk
        data = redact(before, self.secrets)
        if data is not before:  # (redact returns its input when there is nothing to replace)
            self.redactions += 1
        if not chunk:  # end of stream: flush what was held back
            self.pending = b""
            return data
        keep = self._partial_tail(data)
        self.pending = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep] if keep else data

    def _partial_tail(self, data: bytes) -> int:
        """Length of the longest suffix of ``data`` that is a proper prefix of some secret.

        Such a suffix starts with the secret's first byte, within its last ``len(secret) - 1`` bytes: only those
        places are compared, leftmost (longest) first."""
        longest = 0
        for secret in self.secrets:
            first = secret[:1]
            at = data.find(first, max(len(data) - len(secret) + 1, 0))
            while at != -1 and len(data) - at > longest:
                if secret.startswith(data[at:]):
                    longest = len(data) - at
                    break
                at = data.find(first, at + 1)
        return longest


PIECE = 64 * 1024
BROTLI_SLICE = 1  # a byte of brotli can stand for ~16 MiB of output: feed it one byte at a time
ZSTD_SLICE = 256  # a zstd block holds at most 128 KiB: a few hundred input bytes give at most a few MiB
ZSTD_MAX_WINDOW = 8 << 20
Emit = Callable[[bytes], None]


class UnsupportedEncoding(ValueError):
    """A ``Content-Encoding`` the redactor cannot decode (unknown, stacked, or its library is missing)."""


def content_codings(header: str) -> list[str]:
    """The codings named by a ``Content-Encoding`` header, lowercased, ``identity`` left out."""
    return [c for c in (part.strip().lower() for part in header.split(",")) if c and c != "identity"]


class _Zlib:
    """gzip (``x-gzip``), and deflate: zlib-wrapped as RFC 9110 says, or raw as some servers send it."""

    def __init__(self, coding: str) -> None:
        self.gzip = coding in ("gzip", "x-gzip")
        self._head = b""
        self._wbits = 31 if self.gzip else 0
        self._d: Any = zlib.decompressobj(31) if self.gzip else None
        self._e: Any = None

    def decode(self, data: bytes, emit: Emit) -> None:
        if self._d is None:  # deflate: the first two bytes say whether there is a zlib header
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._wbits = 15 if zlib_header else -15
            self._d = zlib.decompressobj(self._wbits)
        while True:
            out = self._d.decompress(data, PIECE)
            if out:
                emit(out)
            data = self._d.unconsumed_tail
            if self._d.eof:
                data = self._d.unused_data
                if not data:
                    return
                if not self.gzip:
                    raise ValueError("data after the end of the compressed body")
                self._d = zlib.decompressobj(31)  # another gzip member
            elif not data and len(out) < PIECE:
                return

    def end(self) -> None:
        if self._d is None or not self._d.eof:
            raise ValueError("the compressed body ends early")

    def encode(self, data: bytes) -> bytes:
        if self._e is None:
            self._e = zlib.compressobj(6, zlib.DEFLATED, self._wbits)
        return bytes(self._e.compress(data) + self._e.flush(zlib.Z_SYNC_FLUSH))

    def finish(self) -> bytes:
        return b"" if self._e is None else bytes(self._e.flush(zlib.Z_FINISH))


class _Brotli:
    def __init__(self) -> None:
        try:
            import brotli  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - brotli comes with mitmproxy
            raise UnsupportedEncoding("br") from None
        self._d = brotli.Decompressor()
        self._e = brotli.Compressor(quality=4)

    def decode(self, data: bytes, emit: Emit) -> None:
        for i in range(0, len(data), BROTLI_SLICE):
            out = self._d.process(data[i : i + BROTLI_SLICE])
            if out:
                emit(out)

    def end(self) -> None:
        if not self._d.is_finished():
            raise ValueError("the compressed body ends early")

    def encode(self, data: bytes) -> bytes:
        return bytes(self._e.process(data) + self._e.flush())

    def finish(self) -> bytes:
        return bytes(self._e.finish())


class _Zstd:
    def __init__(self) -> None:
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard comes with mitmproxy
            raise UnsupportedEncoding("zstd") from None
        self._zstd = zstandard
        self._d = self._decoder()
        self._e = zstandard.ZstdCompressor(level=3).compressobj()

    def _decoder(self) -> Any:
        return self._zstd.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj(write_size=PIECE)

    def decode(self, data: bytes, emit: Emit) -> None:
        while data:
            if self._d.eof:
                self._d = self._decoder()  # another frame
            piece, data = data[:ZSTD_SLICE], data[ZSTD_SLICE:]
            out = self._d.decompress(piece)
            if out:
                emit(out)
            if self._d.eof and self._d.unused_data:
                data = self._d.unused_data + data

    def end(self) -> None:
        if not self._d.eof:
            raise ValueError("the compressed body ends early")

    def encode(self, data: bytes) -> bytes:
        return bytes(self._e.compress(data) + self._e.flush(self._zstd.COMPRESSOBJ_FLUSH_BLOCK))

    def finish(self) -> bytes:
        return bytes(self._e.flush())


def _codec(coding: str) -> _Zlib | _Brotli | _Zstd:
    if coding in ("gzip", "x-gzip", "deflate"):
        return _Zlib(coding)
    if coding == "br":
        return _Brotli()
    if coding == "zstd":
        return _Zstd()
    raise UnsupportedEncoding(coding)


class EncodedRedactor:
    """A ``response.stream`` callable for a compressed body: decode, redact, encode again with the same coding.

    ``on_error(reason)`` is called once if the body does not decode; nothing more is sent after that (the proxy then
    ends the response, so the child sees a broken transfer, never an undecoded secret).
    """

    def __init__(self, secrets: list[bytes], coding: str, on_error: Callable[[str], None]) -> None:
        codings = content_codings(coding)
        if len(codings) != 1:
            raise UnsupportedEncoding(coding)
        self.coding = codings[0]
        self._codec = _codec(self.coding)
        self._redactor = StreamRedactor(secrets)
        self._on_error = on_error
        self._started = False
        self._failed = False

    @property
    def redactions(self) -> int:
        return self._redactor.redactions

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self._failed or not (chunk or self._started):
            return []  # after a failure; or an empty body, which stays empty
        self._started = True
        out: list[bytes] = []
        try:
            if chunk:
                self._codec.decode(chunk, lambda piece: self._encode(piece, out))
            else:
                self._codec.end()
                tail = self._redactor(b"")  # what the redactor held back
                if tail:
                    out.append(self._codec.encode(tail))
                out.append(self._codec.finish())
        except Exception as exc:  # zlib.error, brotli.error, zstd.ZstdError, ValueError: whatever the library raises
            self._failed = True
            self._on_error(f"the {self.coding} response body does not decode ({_why(exc)})")
            return []
        return [piece for piece in out if piece]

    def _encode(self, piece: bytes, out: list[bytes]) -> None:
        redacted = self._redactor(piece) if piece else piece
        if redacted:
            out.append(self._codec.encode(redacted))


def _why(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
