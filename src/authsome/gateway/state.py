"""The gateway's files, per profile, under ``<home>/profiles/<profile>/gateway/``.

* ``gateway.lock``: held (``flock``) by the running gateway for its whole life. The kernel drops it when the process
  ends, however it ends (``kill -9`` included), so "is one running?" never trusts a stale pid.
* ``gateway.pid`` and ``state.json`` (pid, address, CA paths, start time): written once listening, removed on a clean
  exit; a leftover from a killed gateway is ignored because the lock is free.
* ``gateway.log``: what ``authsome gateway start`` sends the background gateway's lines to.
* ``control.sock``: where ``authsome run`` gets an agent for its child (:mod:`authsome.gateway.runs`).
* ``ca-bundle.pem``: what an agent trusts: the system CAs, the CAs of the gateway's ``SSL_CERT_FILE`` /
  ``REQUESTS_CA_BUNDLE`` and the gateway's CA (certificates only; public).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsome.errors import AuthsomeError
from authsome.paths import ensure_private_dir, write_private_file


@dataclass(frozen=True)
class GatewayFiles:
    """Paths of one profile's gateway."""

    root: Path

    @classmethod
    def of(cls, profile_dir: Path) -> GatewayFiles:
        return cls(profile_dir / "gateway")

    def ensure(self) -> GatewayFiles:
        ensure_private_dir(self.root)
        return self

    @property
    def lock(self) -> Path:
        return self.root / "gateway.lock"

    @property
    def pid(self) -> Path:
        return self.root / "gateway.pid"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def log(self) -> Path:
        return self.root / "gateway.log"

    @property
    def bundle(self) -> Path:
        return self.root / "ca-bundle.pem"

    @property
    def control(self) -> Path:
        """The control socket ``authsome run`` asks for a per-run agent (authsome.gateway.runs)."""
        return self.root / "control.sock"


class AlreadyRunning(AuthsomeError):
    """Another gateway serves this profile."""


@contextlib.contextmanager
def running(files: GatewayFiles) -> Iterator[None]:
    """Hold the profile's gateway lock while the block runs (:func:`publish` the state inside it)."""
    files.ensure()
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = read_state(files)
            pid = f" (pid {other['pid']})" if other else ""
            raise AlreadyRunning(
                f"a gateway already serves this profile{pid}",
                "`authsome gateway status` shows it; `authsome gateway stop` ends it",
            ) from None
        try:
            yield
        finally:
            for path in (files.state, files.pid):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    finally:
        os.close(fd)


def publish(files: GatewayFiles, state: Mapping[str, Any]) -> None:
    """Write the pid file and ``state.json`` (atomically) once the gateway listens."""
    write_private_file(files.pid, f"{state['pid']}\n".encode())
    write_private_file(files.state, json.dumps(dict(state), indent=2, sort_keys=True).encode() + b"\n")


def is_running(files: GatewayFiles) -> bool:
    """Whether a gateway holds this profile's lock right now."""
    try:
        fd = os.open(files.lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_state(files: GatewayFiles) -> dict[str, Any] | None:
    """The running gateway's ``state.json``, or None (none running, or not listening yet)."""
    if not is_running(files):
        return None
    try:
        data = json.loads(files.state.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_bundle(path: Path, ca_pem: bytes, env: Mapping[str, str]) -> Path:
    """``path`` = the system CAs + the CAs ``env`` names (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``) + ``ca_pem``."""
    from authsome.proxy import ca

    blocks: list[bytes] = []
    for source in [ca.system_bundle(), *ca.user_bundles(env)]:
        if source is None:
            continue
        with contextlib.suppress(OSError):
            blocks.extend(ca.pem_certs(source.read_bytes()))
    blocks.extend(ca.pem_certs(ca_pem))
    data = b"\n".join(dict.fromkeys(blocks)) + b"\n"
    if not (path.exists() and path.read_bytes() == data):
        write_private_file(path, data)
    return path
