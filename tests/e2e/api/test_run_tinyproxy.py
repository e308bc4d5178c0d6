"""`authsome run` chains through a real forward proxy (Debian's tinyproxy, with Basic credentials) inherited from
the parent's HTTPS_PROXY. tinyproxy resolves the API's name itself: it runs in a private mount namespace whose
/etc/hosts maps that name to loopback (root only, as CI is here)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from authsome import Authsome

if TYPE_CHECKING:
    from tests.e2e.api.conftest import Runs

pytestmark = pytest.mark.e2e

HOST = "api.corp-test.example"
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if os.geteuid() != 0 or not Path(TINYPROXY).exists() or shutil.which("unshare") is None:
        pytest.skip("needs root, unshare and tinyproxy (scripts/test installs tinyproxy)")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {HOST}\n")
    log = tmp_path / "tinyproxy.log"
    for _ in range(5):  # a port taken between _free_port and tinyproxy's bind: tinyproxy exits, try another
        port = _free_port()
        proc = _start_tinyproxy(tmp_path, hosts, log, port)
        if _listening(proc, port):
            break
        proc.kill()
        proc.wait(timeout=10)
    else:
        pytest.fail(f"tinyproxy did not start; its log: {log.read_text() if log.exists() else '(none)'}")
    yield port, log
    proc.terminate()
    proc.wait(timeout=10)


def _start_tinyproxy(tmp_path: Path, hosts: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    """tinyproxy on 127.0.0.1:``port`` with basic auth, seeing ``HOST`` as loopback (its own /etc/hosts)."""
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nBasicAuth corp s3cret\n"
        f'LogLevel Connect\nLogFile "{log}"\n'
    )
    return subprocess.Popen(
        ["unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts && exec {TINYPROXY} -d -c {conf}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Whether ``proc`` listens on ``port`` within 5 s (False once it has exited)."""
    for _ in range(100):
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def test_chains_through_an_authenticated_tinyproxy(
    tinyproxy: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Runs
) -> None:
    from tests.e2e.api.conftest import _stand_in

    stand_in_gen = _stand_in(HOST, tmp_path, monkeypatch)
    api = next(stand_in_gen)
    monkeypatch.delenv("AUTHSOME_TEST_RESOLVE")  # the corporate proxy resolves the name, not authsome
    provider = {
        "schema_version": 1,
        "name": "corpapi",
        "display_name": "Corp API",
        "auth_type": "api_key",
        "flow": "api_key",
        "host_url": f"{HOST}:{api.port}",
        "api_key": {"header_name": "Authorization", "header_prefix": "Bearer ", "env_var": "CORP_KEY"},
    }
    (tmp_path / "corpapi.json").write_text(json.dumps(provider))
    Authsome().register(tmp_path / "corpapi.json")
    Authsome(env={"CORP_KEY": "corp-key-0123456789"}).login("corpapi")
    port, log = tinyproxy
    monkeypatch.setenv("HTTPS_PROXY", f"http://corp:s3cret@127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    out = tmp_path / "out.txt"
    code = run(
        Authsome(),
        ["sh", "-c", f"curl -sS https://{HOST}:{api.port}/v1/things > {out}"],
        upstream_ca=api.ca_file,
        confdir=tmp_path / "mitm",
    )
    assert code == 0, out.read_text()
    assert api.seen == ["Bearer corp-key-0123456789"]
    assert f'Established connection to host "{HOST}"' in log.read_text()  # it really went through tinyproxy
    for _ in stand_in_gen:
        pass
