"""Keep an injected credential from coming back to the child: a TRACE-like echo, a debug endpoint, an error page.

Pure and incremental: :class:`StreamRedactor` is fed response chunks and replaces every occurrence of the secrets,
including ones split across chunks. It holds back only a tail that could still be the start of a secret, so
server-sent events and other streams keep streaming.
"""

from __future__ import annotations

from collections.abc import Iterable

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
        data = self.pending + chunk
        before = data
        data = redact(data, self.secrets)
        if data != before:
            self.redactions += 1
        if not chunk:  # end of stream: flush what was held back
            self.pending = b""
            return data
        keep = self._partial_tail(data)
        self.pending = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep] if keep else data

    def _partial_tail(self, data: bytes) -> int:
        """Length of the longest suffix of ``data`` that is a proper prefix of some secret."""
        longest = 0
        for secret in self.secrets:
            for size in range(min(len(secret) - 1, len(data)), longest, -1):
                if data.endswith(secret[:size]):
                    longest = size
                    break
        return longest
