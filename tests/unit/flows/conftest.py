"""Fixtures for the flow unit tests: providers built in code, and the shared headless Chromium."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authsome.providers.schema import Provider, parse_provider

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@pytest.fixture
def api_key_provider() -> Callable[..., Provider]:
    """Build an API-key provider: ``api_key_provider(env_var="ACME_KEY", key_pattern=r"ak-[a-z0-9]{8}")``."""

    def make(name: str = "acme", display_name: str = "Acme", **api_key: Any) -> Provider:
        data = {"schema_version": 1, "name": name, "display_name": display_name, "auth_type": "api_key",
                "api_key": api_key}
        return parse_provider(data)

    return make
