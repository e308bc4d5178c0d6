"""``authsome doctor``: checks a user can act on, each with the fix when it fails."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authsome.errors import AuthsomeError
from authsome.models import Credential
from authsome.secret import Secret

if TYPE_CHECKING:
    from authsome.api import Authsome


@dataclass(frozen=True)
class Check:
    """One line of ``authsome doctor``."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


_PROBE_PROVIDER = "authsome-doctor"


def run_checks(auth: Authsome) -> list[Check]:
    """Run every check; none raises."""
    return [_layout(auth), _key_source(auth), _round_trip(auth), _records(auth), _providers(auth), _proxy_ca()]


def _check(name: str, ok: bool, detail: str, hint: str | None = None) -> Check:
    return Check(name, ok, detail, None if ok else hint)


def _layout(auth: Authsome) -> Check:
    bad = []
    for root, dirs, files in os.walk(auth.home.root):
        for d in dirs:
            p = Path(root, d)
            if stat.S_IMODE(p.lstat().st_mode) != 0o700:
                bad.append(f"{p} (dir {oct(stat.S_IMODE(p.lstat().st_mode))})")
        for f in files:
            p = Path(root, f)
            if stat.S_IMODE(p.lstat().st_mode) & 0o077:
                bad.append(f"{p} ({oct(stat.S_IMODE(p.lstat().st_mode))})")
    if bad:
        return _check("layout", False, "too-open permissions: " + ", ".join(bad[:5]), "chmod 700 dirs / 600 files")
    return _check("layout", True, f"{auth.home.root}: directories 0700, files 0600")


def _key_source(auth: Authsome) -> Check:
    try:
        source = auth.key_source
        source.load()
        return _check("key source", True, source.describe())
    except AuthsomeError as exc:
        return _check("key source", False, exc.message, exc.hint)


def _round_trip(auth: Authsome) -> Check:
    """Write, read back and delete a throw-away record inside a transaction that is rolled back."""

    class _Rollback(Exception):
        pass

    try:
        probe = Secret(os.urandom(16).hex())
        try:
            with auth.store.vault.transaction():
                auth.store.save(_PROBE_PROVIDER, "default", Credential(kind="api_key", api_key=probe))
                back = auth.store.load(_PROBE_PROVIDER, "default").api_key
                if back != probe:
                    return _check("store round trip", False, "value read back differs", "the store may be damaged")
                raise _Rollback
        except _Rollback:
            pass
        if auth.store.info(_PROBE_PROVIDER, "default") is not None:
            return _check("store round trip", False, "rollback did not undo the write", "the store may be damaged")
        return _check("store round trip", True, f"encrypt/decrypt/rollback ok ({auth.store.vault.path})")
    except AuthsomeError as exc:
        return _check("store round trip", False, exc.message, exc.hint)


def _records(auth: Authsome) -> Check:
    damaged = []
    try:
        for info in auth.store.connections():
            try:
                auth.store.load(info.provider, info.name)
            except AuthsomeError as exc:
                damaged.append(f"{info.provider}/{info.name}: {exc.message}")
    except AuthsomeError as exc:
        return _check("stored credentials", False, exc.message, exc.hint)
    if damaged:
        return _check("stored credentials", False, "; ".join(damaged), "remove them and log in again")
    return _check("stored credentials", True, "every stored credential decrypts")


def _providers(auth: Authsome) -> Check:
    problems = auth.registry.problems()
    if problems:
        detail = "; ".join(f"{path.name}: {why}" for path, why in problems)
        return _check("provider files", False, detail, "fix or `authsome remove` the files named")
    return _check("provider files", True, f"{len(auth.registry.names())} providers load")


def _proxy_ca() -> Check:
    try:
        from authsome.proxy.ca import ca_status
    except ImportError:
        return _check("proxy CA", True, "proxy not installed")
    status = ca_status(None)
    ok = bool(status.get("exists"))
    trusted = status.get("trusted_system")
    detail = f"{status.get('path')}: " + ("present" if ok else "not created yet (created by the first `authsome run`)")
    detail += "; trusted system-wide" if trusted else "; not trusted system-wide (authsome run passes it to the child)"
    return _check("proxy CA", True, detail)
