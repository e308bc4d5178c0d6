"""A Node child (undici's EnvHttpProxyAgent reads the proxy variables; NODE_EXTRA_CA_CERTS trusts the proxy CA)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from authsome import Authsome

if TYPE_CHECKING:
    from tests.e2e.api.conftest import Runs

pytestmark = pytest.mark.e2e

CLIENT_DIR = Path(__file__).resolve().parents[2] / "node_client"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node is not installed (scripts/test installs it)")
def test_node_undici_child(openai_api: Any, tmp_path: Path, run: Runs) -> None:
    if not (CLIENT_DIR / "node_modules" / "undici").is_dir():
        pytest.fail("run scripts/test (it installs tests/node_client with npm ci)")
    key = "sk-node-0123456789abcdef"
    Authsome(env={"OPENAI_API_KEY": key}).login("openai")
    out = tmp_path / "out.txt"
    command = f"node {CLIENT_DIR / 'client.mjs'} https://api.openai.com/v1/models > {out}"
    code = run(Authsome(), ["sh", "-c", command], upstream_ca=openai_api.ca_file, confdir=tmp_path / "mitm")
    assert code == 0, out.read_text()
    assert out.read_text().startswith("200")
    assert openai_api.seen == [f"Bearer {key}"]
