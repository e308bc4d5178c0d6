from __future__ import annotations

import json
import tracemalloc
import zlib
from collections.abc import Callable

import brotli  # type: ignore[import-untyped]
import pytest
import zstandard

from authsome.proxy.redact import (
    MARKER,
    EncodedRedactor,
    StreamRedactor,
    UnsupportedEncoding,
    mask,
    redact,
    secrets_of,
)

SECRET = "sk-test-0123456789abcdef"


def feed(redactor: StreamRedactor, chunks: list[bytes]) -> bytes:
    return b"".join(redactor(c) for c in [*chunks, b""])


def test_secrets_of_header_values() -> None:
    assert secrets_of([f"Bearer {SECRET}"]) == [f"Bearer {SECRET}".encode(), SECRET.encode()]
    assert secrets_of(["short"]) == []


def test_whole_body_redaction() -> None:
    body = f'{{"echo": "Bearer {SECRET}", "again": "{SECRET}"}}'.encode()
    out = redact(body, secrets_of([f"Bearer {SECRET}"]))
    assert SECRET.encode() not in out and out.count(MARKER) == 2
    assert len(out) == len(body)  # same length: Content-Length stays true


@pytest.mark.parametrize("split", range(1, len(SECRET) + 12))
def test_secret_split_across_chunks_is_caught(split: int) -> None:
    data = f"data: {{'token': '{SECRET}'}}\n\n".encode()
    out = feed(StreamRedactor(secrets_of([SECRET])), [data[:split], data[split:]])
    assert SECRET.encode() not in out and MARKER in out


def test_streams_keep_streaming() -> None:
    """Only a tail that could start a secret is held back; an ordinary event passes at once."""
    redactor = StreamRedactor(secrets_of([SECRET]))
    assert redactor(b"data: one\n\n") == b"data: one\n\n"
    assert redactor(b"data: two sk-te") == b"data: two "
    assert redactor(b"xt\n\n") == b"sk-text\n\n"
    assert redactor(SECRET.encode()[:5]) == b""
    assert redactor(SECRET.encode()[5:]) == mask(SECRET.encode())
    assert redactor(b"") == b""


@pytest.mark.parametrize("seed", range(20))
def test_the_held_back_tail_is_the_longest_that_could_start_a_secret(seed: int) -> None:
    """Against the definition, on data full of near-misses (a two-letter alphabet, secrets that overlap themselves)."""
    import random

    rng = random.Random(seed)
    secrets = sorted({bytes(rng.choices(b"ab", k=rng.randint(8, 14))) for _ in range(3)}, key=len, reverse=True)
    redactor = StreamRedactor(secrets)
    for _ in range(200):
        data = bytes(rng.choices(b"ab", k=rng.randint(0, 30)))
        expected = max(
            (size for s in secrets for size in range(1, min(len(s) - 1, len(data)) + 1) if data.endswith(s[:size])),
            default=0,
        )
        assert redactor._partial_tail(data) == expected, (secrets, data)


# -- compressed bodies ---------------------------------------------------------------------------------------------
def _zlib(wbits: int) -> tuple[Callable[[bytes], bytes], Callable[[], Decoder]]:
    def encode(data: bytes) -> bytes:
        c = zlib.compressobj(6, zlib.DEFLATED, wbits)
        return c.compress(data) + c.flush()

    return encode, lambda: zlib.decompressobj(wbits).decompress


CODINGS: dict[str, tuple[str, Callable[[bytes], bytes], Callable[[], Decoder]]] = {
    "gzip": ("gzip", *_zlib(31)),
    "deflate": ("deflate", *_zlib(15)),
    "deflate-raw": ("deflate", *_zlib(-15)),
    "br": ("br", brotli.compress, lambda: brotli.Decompressor().process),
    "zstd": (
        "zstd",
        zstandard.ZstdCompressor().compress,
        lambda: zstandard.ZstdDecompressor().decompressobj().decompress,
    ),
}
Decoder = Callable[[bytes], bytes]


def encoded(coding: str) -> tuple[EncodedRedactor, list[str], Callable[[bytes], bytes], Callable[[], Decoder]]:
    name, encode, decoder = CODINGS[coding]
    errors: list[str] = []
    return EncodedRedactor(secrets_of([f"Bearer {SECRET}"]), name, errors.append), errors, encode, decoder


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_a_compressed_echo_is_decoded_redacted_and_encoded_again(coding: str) -> None:
    redactor, errors, encode, decoder = encoded(coding)
    body = encode(f'{{"you_sent": "Bearer {SECRET}", "again": "{SECRET}"}}'.encode() * 50)
    out = b"".join(piece for i in range(0, len(body), 5) for piece in redactor(body[i : i + 5]))
    out += b"".join(redactor(b""))
    plain = decoder()(out)
    assert SECRET.encode() not in plain and plain.count(MARKER) == 100 and errors == []
    assert json.loads(plain[: plain.index(b"}") + 1])["you_sent"].startswith("[redacted]")


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_compressed_stream_keeps_streaming(coding: str) -> None:
    """Each event the server flushes reaches the child as soon as it arrives, decodable on its own."""
    name, _, decoder = CODINGS[coding]
    redactor = EncodedRedactor(secrets_of([SECRET]), name, pytest.fail)
    stream = _flushing_encoder(coding)
    decode = decoder()
    for event in (b"data: one\n\n", b"data: two\n\n"):
        assert decode(b"".join(redactor(stream(event)))) == event


def _flushing_encoder(coding: str) -> Callable[[bytes], bytes]:
    if coding == "gzip":
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        return lambda data: z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    if coding == "br":
        b = brotli.Compressor()
        return lambda data: b.process(data) + b.flush()
    zs = zstandard.ZstdCompressor().compressobj()
    return lambda data: zs.compress(data) + zs.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_a_decompression_bomb_stays_bounded_in_memory(coding: str) -> None:
    redactor, errors, encode, _ = encoded(coding)
    body = encode(b"\0" * (64 << 20))
    tracemalloc.start()
    try:
        sent = sum(len(piece) for i in range(0, len(body), 1 << 16) for piece in redactor(body[i : i + (1 << 16)]))
        sent += sum(len(piece) for piece in redactor(b""))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert errors == []
    assert peak < 40 << 20, f"{peak >> 20} MiB held for a 64 MiB body"
    assert sent < 8 << 20  # encoded again, what goes to the child stays small too


@pytest.mark.parametrize("coding", ["x-custom", "gzip, br", "compress"])
def test_a_coding_it_cannot_read_is_unsupported(coding: str) -> None:
    with pytest.raises(UnsupportedEncoding):
        EncodedRedactor([SECRET.encode()], coding, pytest.fail)


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_a_body_that_does_not_decode_stops_the_stream(coding: str) -> None:
    redactor, errors, encode, decoder = encoded(coding)
    body = encode(b"x" * 1000)
    sent = [*redactor(body[:-4] + b"\xff" * 32 + SECRET.encode()), *redactor(SECRET.encode()), *redactor(b"")]
    assert len(errors) == 1 and ("does not decode" in errors[0] or "ends early" in errors[0])
    assert SECRET.encode() not in decoder()(b"".join(sent))  # only what decoded went on, checked


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_a_body_that_ends_early_is_an_error(coding: str) -> None:
    redactor, errors, encode, _ = encoded(coding)
    body = encode(b"y" * 5000)
    redactor(body[: len(body) // 2])
    assert redactor(b"") == []
    assert len(errors) == 1 and "ends early" in errors[0]


def test_an_empty_compressed_body_stays_empty() -> None:
    redactor, errors, _, _ = encoded("gzip")
    assert redactor(b"") == [] and errors == []
