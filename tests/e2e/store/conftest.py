"""A shared store end to end: replicas (homes that hold the same master key) on one real PostgreSQL database, driven
through the real ``authsome`` command, and the real OAuth server for refreshes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme
from tests.e2e.proxy import conftest as proxy_tests
from tests.e2e.store.fleet import Fleet, Upstream, upstream
from tests.oauth_server.fixtures import OAuthServer, approve, loopback_context
from tests.oauth_server.harness import QueueUI, in_background
from tests.pg import PgServer, pg_server, pg_url  # noqa: F401  (registers the fixtures)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from authsome import Authsome, ConnectionInfo

AUTHSOME = str(Path(sys.executable).with_name("authsome"))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Replica:
    """One machine of a fleet: its own home (with the fleet's master key) and the shared database's URL."""

    home: Path
    url: str

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "AUTHSOME_HOME": str(self.home), "AUTHSOME_STORE_URL": self.url, **extra}

    def __call__(self, *args: str, input: str = "", **env: str) -> Result:
        proc = subprocess.run(
            [AUTHSOME, *args], input=input, capture_output=True, text=True, env=self.env(**env), timeout=60
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def replicas(pg_url: str, authsome_home: Path) -> Callable[[int], list[Replica]]:  # noqa: F811
    """``replicas(n)``: n homes on the database; the first is the test's own home (see :func:`share_key`)."""

    def make(count: int) -> list[Replica]:
        homes = [authsome_home] + [authsome_home.parent / f"replica-{i}" for i in range(1, count)]
        for home in homes:
            home.mkdir(mode=0o700, exist_ok=True)
        return [Replica(home, pg_url) for home in homes]

    return make


def share_key(replicas: list[Replica]) -> None:
    """Give every replica the first one's master key (what an operator does when adding a machine)."""
    for replica in replicas[1:]:
        shutil.copy2(replicas[0].home / "master.key", replica.home / "master.key")


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = loopback_context(chromium)
    yield context.new_page()
    context.close()


@pytest.fixture
def browser_login(page: Page) -> Callable[..., ConnectionInfo]:
    """Run ``Authsome.login`` on a worker thread while Chromium approves on the main thread."""
    from authsome import LoginOptions

    def run(auth: Authsome, client_id: str, login: str = "alice") -> ConnectionInfo:
        ui = QueueUI()
        future = in_background(auth.login, "testidp", LoginOptions(client_id=client_id, redirect_port=0), ui=ui)
        approve(page, ui.urls.get(timeout=20), login)
        return future.result(timeout=30)

    return run


@pytest.fixture
def testidp_file(oauth_server: OAuthServer, tmp_path: Path) -> Path:
    """A provider file for the real OAuth server (public clients: no secret to ask for)."""
    data = oauth_server.provider("pkce").to_dict()
    data["client"] = {"client_id_env": "TESTIDP_CLIENT_ID"}
    data["host_url"] = "api.testidp.test"
    path = tmp_path / "testidp.json"
    path.write_text(json.dumps(data))
    return path


test_ca = proxy_tests.test_ca
test_ca_file = proxy_tests.test_ca_file


@pytest.fixture
def api(test_ca: trustme.CA) -> Iterator[Upstream]:
    """The TLS stand-in for api.openai.com, api.acme.test and api.testidp.test (what the replicas reach)."""
    with upstream(test_ca) as server:
        yield server


@pytest.fixture
def fleet(pg_url: str, api: Upstream, test_ca_file: Path) -> Iterator[Fleet]:  # noqa: F811
    """Replica homes on one fresh database (``fleet.home(0)`` makes the master key the others copy). Under a short
    directory: a gateway's control socket path must fit in a socket address (108 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="authsome-fleet-"))
    made = Fleet(root, pg_url, api.port, test_ca_file)
    yield made
    made.close()
    shutil.rmtree(root, ignore_errors=True)
