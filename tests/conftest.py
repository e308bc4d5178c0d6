"""Shared fixtures: every test gets its own AUTHSOME_HOME and a clean authsome environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real OAuth server and headless Chromium, registered once for every test directory (one Playwright per process).
pytest_plugins = ["tests.oauth_server.fixtures"]

_SCRUB = (
    "AUTHSOME_",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GITHUB_TOKEN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "PYTHON_KEYRING_BACKEND",
)


@pytest.fixture(autouse=True)
def authsome_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home per test, with the file key source (no OS keyring on test machines)."""
    for name in list(os.environ):
        if name.startswith(_SCRUB):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "authsome-home"
    monkeypatch.setenv("AUTHSOME_HOME", str(home))
    monkeypatch.setenv("AUTHSOME_KEY_SOURCE", "file")
    return home


@pytest.fixture(autouse=True)
def no_proxy_error_logged(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A proxy addon that raises is a bug even when the child's answer looks right (what follows the raise was
    skipped), and so is an error mitmproxy or asyncio logs (a crashed connection handler, a task whose exception
    nobody retrieved): any test in which one is logged fails, unless marked ``addon_error_expected``."""
    yield
    if request.node.get_closest_marker("addon_error_expected"):
        return
    errors = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.name.startswith(("mitmproxy", "asyncio")) and record.levelno >= logging.ERROR
    ]
    assert not errors, f"mitmproxy or asyncio logged an error: {errors}"
