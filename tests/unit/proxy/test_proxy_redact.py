from __future__ import annotations

import pytest

from authsome.proxy.redact import MARKER, StreamRedactor, mask, redact, secrets_of

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
