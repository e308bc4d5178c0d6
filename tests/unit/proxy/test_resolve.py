"""The proxy's resolver: answers kept for a while and shared, failures asked again, test stand-ins mapped in.

Lookups are real (``localhost`` and numeric addresses, answered without any network); the test only counts how often
the event loop's own resolver is asked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from authsome.proxy.resolve import CachingResolver

from .conftest import run_async


def _resolver(
    loop: asyncio.AbstractEventLoop, ttl: float = 30.0, table: dict[tuple[str, int], tuple[str, int]] | None = None
) -> tuple[CachingResolver, list[tuple[Any, ...]]]:
    asked: list[tuple[Any, ...]] = []
    real = loop.getaddrinfo

    async def counting(host: Any, port: Any, **kwargs: Any) -> Any:
        asked.append((host, port))
        return await real(host, port, **kwargs)

    loop.getaddrinfo = counting  # type: ignore[method-assign]
    resolver = CachingResolver(loop, table, ttl=ttl)
    resolver.install(loop)
    return resolver, asked


def _run(body: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await body(asyncio.get_running_loop())

    run_async(main())


def test_answers_are_reused_until_they_expire() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        _, asked = _resolver(loop, ttl=1.0)
        first = await loop.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
        assert await loop.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM) == first
        assert asked == [("localhost", 443)]
        await loop.getaddrinfo("localhost", 8443, type=socket.SOCK_STREAM)  # another port is another question
        assert len(asked) == 2
        await asyncio.sleep(1.1)
        await loop.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
        assert len(asked) == 3

    _run(body)


def test_concurrent_lookups_share_one_question() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        _, asked = _resolver(loop)
        answers = await asyncio.gather(*(loop.getaddrinfo("localhost", 443) for _ in range(5)))
        assert len(asked) == 1
        assert all(answer == answers[0] for answer in answers)

    _run(body)


def test_a_failure_is_asked_again() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        _, asked = _resolver(loop)
        for _ in range(2):
            with pytest.raises(socket.gaierror):
                await loop.getaddrinfo("localhost", "no-such-service")
        assert len(asked) == 2

    _run(body)


def test_stand_ins_change_the_address_not_the_name() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        _, asked = _resolver(loop, table={("api.openai.com", 443): ("127.0.0.1", 8443)})
        answer = await loop.getaddrinfo("API.OpenAI.com.", 443, type=socket.SOCK_STREAM)
        assert {info[4][:2] for info in answer} == {("127.0.0.1", 8443)}
        assert asked == [("127.0.0.1", 8443)]
        other = await loop.getaddrinfo("127.0.0.2", 443, type=socket.SOCK_STREAM)  # not in the table: unchanged
        assert {info[4][:2] for info in other} == {("127.0.0.2", 443)}

    _run(body)
