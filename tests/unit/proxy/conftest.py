"""Helpers for the proxy unit tests: providers built from minimal JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from authsome.providers import Provider, parse_provider

MakeProvider = Callable[..., Provider]
T = TypeVar("T")


def make_provider(
    name: str,
    host_url: str | list[str],
    *,
    header: str = "Authorization",
    prefix: str = "Bearer ",
    env_var: str | None = None,
    oauth: dict[str, Any] | None = None,
) -> Provider:
    data: dict[str, Any] = {"schema_version": 1, "name": name, "host_url": host_url}
    if oauth is None:
        data.update(
            auth_type="api_key",
            flow="api_key",
            api_key={
                "header_name": header,
                "header_prefix": prefix,
                "env_var": env_var or f"{name.upper().replace('-', '_')}_API_KEY",
            },
        )
    else:
        data.update(auth_type="oauth2", flow="pkce", oauth=oauth)
    return parse_provider(data)


@pytest.fixture
def provider() -> MakeProvider:
    return make_provider


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a thread of its own: a session-wide Playwright browser keeps a loop running here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main).result()
