"""``authsome doctor``: checks a user can act on, each with the fix when it fails.

Checks only read: on a home that does not exist yet, doctor creates nothing (no directory, no master key, no store)
and records no key source, so a later ``AUTHSOME_PASSPHRASE`` still chooses the passphrase. Databases are opened
read-only and a home of the authsome package is described, not imported (the next command imports it).
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authsome.errors import AuthsomeError
from authsome.paths import private_umask

if TYPE_CHECKING:
    from authsome.api import Authsome
    from authsome.store.keysource import KeySource
    from authsome.store.legacy import LegacyHome


@dataclass(frozen=True)
class Check:
    """One line of ``authsome doctor``."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


CheckFn = Callable[["Authsome"], "Check | None"]  # None: nothing to say (the check does not apply here)


def run_checks(auth: Authsome) -> list[Check]:
    """Run every check of :data:`CHECKS` in order; none raises, none writes."""
    results = []
    for name, check in CHECKS:
        try:
            result = check(auth)
        except AuthsomeError as exc:
            result = Check(name, False, exc.message, exc.hint)
        if result is not None:
            results.append(result)
    return results


def _check(name: str, ok: bool, detail: str, hint: str | None = None) -> Check:
    return Check(name, ok, detail, None if ok else hint)


# -- the home ----------------------------------------------------------------------------------------------------
def _layout(auth: Authsome) -> Check:
    root = auth.home.root
    if not os.path.lexists(root):
        return _check("layout", True, f"{root} does not exist yet (the first command that stores something makes it)")
    st = root.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return _check("layout", False, f"{root} is not a directory", "point AUTHSOME_HOME at a real directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return _check("layout", False, f"{root} is owned by another user", "set AUTHSOME_HOME to a directory you own")
    pending = _pending_import(auth)  # the import makes these private; until then they are as that tool left them
    bad = []
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or any(path.is_relative_to(entry) for entry in pending):
                continue
            too_open = stat.S_IMODE(mode) != 0o700 if stat.S_ISDIR(mode) else bool(stat.S_IMODE(mode) & 0o077)
            if too_open:
                bad.append(f"{path} ({oct(stat.S_IMODE(mode))})")
    if bad:
        return _check("layout", False, "too-open permissions: " + ", ".join(bad[:5]), "chmod 700 dirs / 600 files")
    if pending:
        detail = f"{root}: 0700/0600 but for the authsome package's files, which its import makes private"
        return _check("layout", True, detail)
    return _check("layout", True, f"{root}: directories 0700, files 0600")


def _pending_import(auth: Authsome) -> list[Path]:
    """The files of a home of the authsome package that the next command imports (none once imported)."""
    from authsome.store import legacy

    return [
        entry
        for found in legacy.detect(auth.home.root)
        if not legacy.is_done(auth.home, found.layout)
        for entry in found.entries()
    ]


# -- the master key and the store --------------------------------------------------------------------------------
def _source(auth: Authsome) -> tuple[KeySource, bool]:
    """The key source in use (or the one the first login would pick) and whether it has been recorded."""
    from authsome.store import keysource

    name = keysource.choose(auth.home, auth.env)
    return keysource.build(name, auth.home, auth.env), auth.home.read_config().get("key_source") is not None


def _key_source(auth: Authsome) -> Check:
    source, recorded = _source(auth)
    if source.name == "env":  # given for this process, never recorded: it must decode
        source.load()
        return _check("key source", True, source.describe())
    if not recorded:
        return _check("key source", True, f"not chosen yet: the first login will use {source.describe()}")
    if not source.exists():
        if any(_record_count(_store_path(auth, p)) for p in _profiles(auth)):
            return _check(
                "key source",
                False,
                f"{source.describe()}: the master key is missing, so the stored credentials cannot be decrypted",
                "restore the key from a backup",
            )
        return _check("key source", True, f"{source.describe()}: no key yet (made at the first login)")
    source.load()
    return _check("key source", True, source.describe())


def _round_trip(auth: Authsome) -> Check:
    """The master key encrypts and decrypts, and the profile's store opens (read-only)."""
    from authsome.store import crypto

    path = _store_path(auth, auth.profile)
    count = _record_count(path)
    if count is None:
        return _check("store round trip", True, f"no store yet for profile {auth.profile} ({path})")
    source, _ = _source(auth)
    if not source.exists():
        return _check("store round trip", False, f"{path} exists but the master key does not", "restore the key")
    key = source.load()
    probe = os.urandom(16).hex()
    if crypto.decrypt(key, crypto.encrypt(key, probe, "authsome-doctor"), "authsome-doctor") != probe:
        return _check("store round trip", False, "a value read back differs", "the key or the crypto is broken")
    return _check("store round trip", True, f"encrypt/decrypt ok; {path} opens read-only ({count} records)")


def _records(auth: Authsome) -> Check:
    from authsome.store.credentials import CredentialStore
    from authsome.store.vault import Vault

    path = _store_path(auth, auth.profile)
    if not _record_count(path):
        return _check("stored credentials", True, f"none stored in profile {auth.profile}")
    source, _ = _source(auth)
    if not source.exists():  # loading would make a new key: said by the key-source check
        return _check("stored credentials", False, "cannot be decrypted without the master key", "restore the key")
    store = CredentialStore(Vault(path.parent, auth.profile, lambda: source))  # an existing store: nothing made
    damaged = []
    for info in store.connections():
        try:
            store.load(info.provider, info.name)
        except AuthsomeError as exc:
            damaged.append(f"{info.provider}/{info.name}: {exc.message}")
    if damaged:
        return _check("stored credentials", False, "; ".join(damaged), "remove them and log in again")
    return _check("stored credentials", True, "every stored credential decrypts")


def _profiles(auth: Authsome) -> list[str]:
    base = auth.home.root / "profiles"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _store_path(auth: Authsome, profile: str) -> Path:
    return auth.home.root / "profiles" / profile / "store.db"


def _record_count(path: Path) -> int | None:
    """How many records the store at ``path`` holds; None when there is no store of this project there."""
    if not path.is_file():
        return None
    try:
        with private_umask():
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'").fetchone():
                return None  # e.g. a store of the authsome package, not imported yet
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise AuthsomeError(f"the store {path} is unreadable: {exc}", "restore it from a backup") from None


# -- providers ---------------------------------------------------------------------------------------------------
def _providers(auth: Authsome) -> Check:
    problems = auth.registry.problems()
    if problems:
        detail = "; ".join(f"{path.name}: {why}" for path, why in problems)
        return _check("provider files", False, detail, "fix or `authsome remove` the files named")
    return _check("provider files", True, f"{len(auth.registry.names())} providers load")


def _authsome_home(auth: Authsome) -> Check | None:
    """Homes written by the authsome package: what the next command imports, or when they were imported."""
    from authsome.store import legacy

    found = legacy.detect(auth.home.root)
    if not found:
        return None
    parts = [_describe_legacy(auth, home) for home in found]
    hints = [hint for ok, _, hint in parts if not ok and hint]
    return _check(
        "authsome package home", all(ok for ok, _, _ in parts), " | ".join(d for _, d, _ in parts), "; ".join(hints)
    )


def _describe_legacy(auth: Authsome, found: LegacyHome) -> tuple[bool, str, str | None]:
    from authsome.store import legacy

    state = legacy.read_state(auth.home, found.layout) or {}
    if state.get("state") == "done":
        when = datetime.datetime.fromtimestamp(float(state.get("finished_at") or 0)).strftime("%Y-%m-%d %H:%M")
        summary = f"the home of {found.label} here was imported on {when} ({state.get('summary')})"
        return True, f"{summary}; its own files are kept as they were; backup copy: {state.get('backup')}", None
    try:
        data = legacy.read(found, auth.env)
    except AuthsomeError as exc:
        return False, f"a home of {found.label} is here but cannot be read: {exc.message}", exc.hint
    what = "finishes its import (stopped halfway)" if state else "imports it"
    detail = (
        f"a home of {found.label} is here ({data.summary()}); the next authsome command {what} in place: its files "
        f"stay as they are (that tool keeps working) and a private copy goes to {auth.home.root / 'backups'}"
    )
    if data.skipped:
        detail += "; not importable: " + "; ".join(data.skipped)
    return True, detail, None


# -- the proxy CA ------------------------------------------------------------------------------------------------
def _proxy_ca(auth: Authsome) -> Check:
    """The CA `run` signs with: key and certificate present, matching, private, valid now, and the same certificate
    as the public file users install."""
    from authsome.proxy.ca import CA_KEY_NAME, ca_cert_path, ca_status, pem_certs

    cert_path = ca_cert_path(None)
    key_path = cert_path.parent / CA_KEY_NAME
    fresh = "delete the mitmproxy-ca* files there; the next `authsome run` makes a new CA (trust it again)"
    if not key_path.exists():
        if cert_path.exists():
            return _check(
                "proxy CA",
                False,
                f"{cert_path} has no private key beside it ({key_path}): the next run would make a new CA that "
                "clients trusting this certificate reject",
                fresh,
            )
        return _check("proxy CA", True, f"{cert_path}: not created yet (created by the first `authsome run`)")
    if stat.S_IMODE(key_path.stat().st_mode) & 0o077:
        return _check("proxy CA", False, f"{key_path} is readable by other users", f"chmod 600 {key_path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(key_path))
    except (ssl.SSLError, OSError) as exc:
        return _check("proxy CA", False, f"{key_path} is not a usable key and certificate ({exc})", fresh)
    signing = pem_certs(key_path.read_bytes())[0]
    problem = _ca_validity(signing)
    if problem:
        return _check("proxy CA", False, f"{key_path}: {problem}", fresh)
    published = pem_certs(cert_path.read_bytes()) if cert_path.exists() else []
    if not published or ssl.PEM_cert_to_DER_cert(published[0].decode()) != ssl.PEM_cert_to_DER_cert(signing.decode()):
        return _check(
            "proxy CA",
            False,
            f"{cert_path} is not the certificate the proxy signs with ({key_path})",
            f"copy the certificate from {key_path} to {cert_path}, or {fresh}",
        )
    status = ca_status(None)
    trusted = status.get("trusted_system")
    detail = f"{cert_path}: valid" + (
        "; trusted system-wide" if trusted else "; not trusted system-wide (authsome run passes it to the child)"
    )
    return _check("proxy CA", True, detail)


def _ca_validity(cert_pem: bytes) -> str | None:
    """Why a CA certificate cannot sign for `run` now (not a CA, expired, not yet valid), or None."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cert_pem.decode("ascii"))
    loaded = context.get_ca_certs()  # lists only certificates that may act as a CA
    if not loaded:
        return "the certificate is not a CA certificate"
    now = datetime.datetime.now(datetime.UTC).timestamp()
    not_before = ssl.cert_time_to_seconds(str(loaded[0]["notBefore"]))
    not_after = ssl.cert_time_to_seconds(str(loaded[0]["notAfter"]))
    if now >= not_after:
        return f"the CA certificate expired on {loaded[0]['notAfter']}"
    if now < not_before:
        return f"the CA certificate is not valid before {loaded[0]['notBefore']}"
    return None


# -- a shared store ------------------------------------------------------------------------------------------------
def _database(auth: Authsome) -> Check | None:
    """The PostgreSQL store, when one is configured: reachable, its schema version, what it holds (only reads)."""
    if not auth.store_url:
        return None
    from authsome.store.backend import check_url
    from authsome.store.pg.inspect import inspect

    found = inspect(check_url(auth.store_url))
    if found.version == 0:
        return _check("store database", True, f"{found.where}: reachable, empty (the first command creates the schema)")
    if found.version > found.latest:
        return _check(
            "store database",
            False,
            f"{found.where}: schema version {found.version}, newer than this authsome knows ({found.latest})",
            "upgrade authsome here; every replica must know the database's schema",
        )
    where = "old: the next command migrates it" if found.version < found.latest else "current"
    held = ", ".join(f"{p} {n} records" for p, n in found.profiles.items()) or "no records"
    return _check(
        "store database",
        True,
        f"{found.where}: reachable, schema version {found.version} ({where}); {held}, {found.audit_records} audit"
        f" records, {found.providers} custom providers",
    )


def _database_key(auth: Authsome) -> Check | None:
    """The database was sealed with this home's master key, and that key opens every record of every profile."""
    if not auth.store_url:
        return None
    from authsome.store import crypto, pg
    from authsome.store.backend import check_url
    from authsome.store.pg.inspect import damaged_records, inspect

    try:
        found = inspect(check_url(auth.store_url))
    except AuthsomeError:
        return None  # unreachable: said by the check before
    if found.key_id is None:
        return _check("database key", True, f"{found.where}: nothing sealed yet (the first write records the key)")
    source, _ = _source(auth)
    if not source.exists():
        return _check(
            "database key",
            False,
            f"{found.where} holds sealed records but this home has no master key ({source.describe()})",
            "copy the master key of the home that wrote them (master.key) into this home",
        )
    key = source.load()
    if crypto.key_id(key) != found.key_id:
        return _check(
            "database key",
            False,
            f"{found.where} was sealed with another master key than this home's ({source.describe()})",
            "give every replica the same key: copy master.key from the home that wrote the database",
        )
    opened, damaged = damaged_records(pg.database(auth.store_url), key)
    if damaged:
        return _check("database key", False, "; ".join(damaged[:5]), "remove them and log in again")
    return _check("database key", True, f"this home's master key opens all {opened} records")


# -- the child of `run` -------------------------------------------------------------------------------------------
def _sandbox(auth: Authsome) -> Check:
    """Which mechanism keeps the child of ``authsome run`` from the store, or why none does."""
    from authsome import isolation

    found = isolation.status()
    if found.mechanism == "namespaces":
        return _check(
            "sandbox of run",
            True,
            "user, mount and PID namespaces: the child cannot read the store, the CA's key or any process outside it",
        )
    if found.mechanism == "landlock":
        return _check(
            "sandbox of run",
            True,
            f"Landlock, as {found.reason}: the child cannot read the store, the CA's key or other processes; files it"
            " creates directly in your home it cannot read back",
        )
    return _check(
        "sandbox of run",
        False,
        f"none: {found.reason}; a child of `authsome run` can read the store like any process of yours",
        "allow unprivileged user namespaces (e.g. sysctl kernel.apparmor_restrict_unprivileged_userns=0, or an"
        " AppArmor profile for this Python) or enable Landlock (lsm=...,landlock)",
    )


def _keyring_exposure(auth: Authsome) -> Check | None:
    """With the OS keyring, a same-user child can ask for the master key itself: say so."""
    source, _ = _source(auth)
    if source.name != "keyring":
        return None
    return _check(
        "master key and the child",
        True,
        "the master key is in the OS keyring, which answers any process of yours once unlocked: a child of `run` can"
        " ask for it (the store it opens stays hidden from the child); the file or passphrase key source keeps it"
        " out of reach too",
    )


# -- the gateway ---------------------------------------------------------------------------------------------------
def _gateway(auth: Authsome) -> Check:
    """Whether this profile's gateway runs, answers, and where it listens (``run`` uses it when it is up)."""
    from authsome.gateway import control
    from authsome.gateway.address import is_loopback
    from authsome.gateway.state import GatewayFiles
    from authsome.providers.hosts import split_host_port

    result = control.status(GatewayFiles(auth.home.root / "profiles" / auth.profile / "gateway"))  # (creates nothing)
    if not result["running"]:
        detail = (
            "not running: each `authsome run` starts its own proxy (`authsome gateway start` makes runs start faster)"
        )
        return _check("gateway", True, detail)
    listen = str(result.get("listen", "?"))
    where = f"{listen} (pid {result.get('pid', '?')})"
    if not result["healthy"]:
        return _check(
            "gateway",
            False,
            f"running on {where} but not answering its health check: runs fall back to their own proxy",
            f"see {result['log']}; then `authsome gateway stop` and `authsome gateway start`",
        )
    try:
        exposed = not is_loopback(split_host_port(listen, None)[0])
    except ValueError:
        exposed = True
    if exposed:
        detail = f"running on {where}, beyond this machine: agent tokens cross the network unencrypted"
        return _check("gateway", True, detail + "; keep it on a private network (docs/gateway.md)")
    return _check("gateway", True, f"running on {where}: it serves this profile's runs")


CHECKS: tuple[tuple[str, CheckFn], ...] = (
    ("layout", _layout),
    ("key source", _key_source),
    ("store round trip", _round_trip),
    ("stored credentials", _records),
    ("provider files", _providers),
    ("authsome package home", _authsome_home),
    ("proxy CA", _proxy_ca),
    ("store database", _database),
    ("database key", _database_key),
    ("sandbox of run", _sandbox),
    ("master key and the child", _keyring_exposure),
    ("gateway", _gateway),
)
