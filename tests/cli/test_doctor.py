"""`authsome doctor` only reads (a fresh home stays as it was, a later passphrase still counts) and its proxy-CA
check really checks the CA `run` signs with."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.conftest import Result, Runner

KEY = "sk-proj-DOCTORKEY0123456789abcdefgh"
NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}  # no OS keyring: a file or a passphrase


@pytest.fixture
def user_home(tmp_path: Path) -> Path:
    """$HOME for the command: where mitmproxy's CA directory (~/.mitmproxy) lives."""
    home = tmp_path / "user"
    home.mkdir()
    return home


def doctor(authsome: Runner, user_home: Path, **env: str) -> tuple[Result, dict[str, Any]]:
    res = authsome("doctor", "--json", env={"HOME": str(user_home), **NO_KEYRING, **env})
    return res, {c["check"]: c for c in res.json()["checks"]}


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``root`` with its mode, mtime and (for files) bytes."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        out[str(path)] = (st.st_mode, st.st_mtime_ns, path.read_bytes() if path.is_file() else b"")
    return out


def test_doctor_on_a_fresh_home_creates_nothing_and_a_later_passphrase_still_counts(
    authsome: Runner, authsome_home: Path, user_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTHSOME_KEY_SOURCE")
    res, checks = doctor(authsome, user_home)
    assert res.code == 0, res.out
    assert not authsome_home.exists()  # no home, no master.key, no store, no recorded key source
    assert "not chosen yet" in checks["key source"]["detail"]
    assert "does not exist yet" in checks["layout"]["detail"]
    login = authsome("login", "openai", env={"OPENAI_API_KEY": KEY, "AUTHSOME_PASSPHRASE": "pw", **NO_KEYRING})
    assert login.code == 0, login.err
    who = authsome("whoami", "--json", env={"AUTHSOME_PASSPHRASE": "pw"}).json()
    assert who["key_source"] == "passphrase"
    assert not (authsome_home / "master.key").exists()


def test_doctor_on_a_used_home_changes_no_file(authsome: Runner, authsome_home: Path, user_home: Path) -> None:
    assert authsome("login", "openai", env={"OPENAI_API_KEY": KEY}).code == 0
    before = snapshot(authsome_home)
    res, checks = doctor(authsome, user_home)
    assert res.code == 0, res.out
    assert checks["stored credentials"]["ok"] and "records" in checks["store round trip"]["detail"]
    assert snapshot(authsome_home) == before  # not even a rolled-back write (a journal file would touch the dir)


def test_a_missing_master_key_with_stored_credentials_fails(
    authsome: Runner, authsome_home: Path, user_home: Path
) -> None:
    assert authsome("login", "openai", env={"OPENAI_API_KEY": KEY}).code == 0
    (authsome_home / "master.key").unlink()
    res, checks = doctor(authsome, user_home)
    assert res.code == 1
    assert not checks["key source"]["ok"] and "missing" in checks["key source"]["detail"]
    assert not (authsome_home / "master.key").exists()  # not silently replaced by a new key


# -- the proxy CA --------------------------------------------------------------------------------------------------
def _ca(days: tuple[int, int] = (-1, 365), is_ca: bool = True) -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM) of a self-signed CA valid from/until now + ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _install(
    user_home: Path, key: bytes | None, cert: bytes, published: bytes | None = None, mode: int = 0o600
) -> Path:
    confdir = user_home / ".mitmproxy"
    confdir.mkdir(mode=0o700)
    if key is not None:
        path = confdir / "mitmproxy-ca.pem"
        path.write_bytes(key + cert)
        path.chmod(mode)
    (confdir / "mitmproxy-ca-cert.pem").write_bytes(published if published is not None else cert)
    return confdir


def test_a_good_ca_passes(authsome: Runner, user_home: Path) -> None:
    _install(user_home, *_ca())
    _, checks = doctor(authsome, user_home)
    assert checks["proxy CA"]["ok"], checks["proxy CA"]
    assert "valid" in checks["proxy CA"]["detail"]


BROKEN: dict[str, Callable[[Path], object]] = {
    "no private key": lambda h: _install(h, None, _ca()[1]),
    "expired": lambda h: _install(h, *_ca(days=(-30, -1))),
    "not yet valid": lambda h: _install(h, *_ca(days=(2, 30))),
    "not a CA": lambda h: _install(h, *_ca(is_ca=False)),
    "key of another CA": lambda h: _install(h, _ca()[0], _ca()[1]),
    "published certificate differs": lambda h: _install(h, *_ca(), published=_ca()[1]),
    "key readable by others": lambda h: _install(h, *_ca(), mode=0o644),
}
EXPECTED = {
    "no private key": "no private key",
    "expired": "expired",
    "not yet valid": "not valid before",
    "not a CA": "not a CA",
    "key of another CA": "not a usable key",
    "published certificate differs": "is not the certificate the proxy signs with",
    "key readable by others": "readable by other users",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_ca_is_reported_with_the_fix(authsome: Runner, user_home: Path, case: str) -> None:
    BROKEN[case](user_home)
    res, checks = doctor(authsome, user_home)
    check = checks["proxy CA"]
    assert res.code == 1 and not check["ok"], check
    assert EXPECTED[case] in check["detail"] and check["hint"]


def test_no_ca_yet_is_fine(authsome: Runner, user_home: Path) -> None:
    _, checks = doctor(authsome, user_home)
    assert checks["proxy CA"]["ok"] and "not created yet" in checks["proxy CA"]["detail"]
    assert not (user_home / ".mitmproxy").exists()


def test_doctor_says_which_sandbox_keeps_the_child_of_run_from_the_store(authsome: Runner, user_home: Path) -> None:
    _, checks = doctor(authsome, user_home)
    assert checks["sandbox of run"]["ok"] and "namespaces" in checks["sandbox of run"]["detail"]
    assert "master key and the child" not in checks  # the file source: nothing to warn about


def test_doctor_names_landlock_where_user_namespaces_are_refused(authsome: Runner, user_home: Path) -> None:
    refuse = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'  # this namespace may make no other
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--", "sh", "-c", refuse, "sh",
         str(Path(sys.executable).with_name("authsome")), "doctor", "--json"],
        capture_output=True, text=True, env={**os.environ, "HOME": str(user_home), **NO_KEYRING}, timeout=60,
    )  # fmt: skip
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    sandbox = checks["sandbox of run"]
    assert sandbox["ok"] and sandbox["detail"].startswith("Landlock"), sandbox
    assert "user namespaces are refused" in sandbox["detail"]


def test_doctor_warns_that_a_keyring_master_key_answers_a_same_user_child(
    authsome: Runner, user_home: Path, tmp_path: Path
) -> None:
    env = {  # keyrings.alt's plaintext file backend stands in for an OS keyring (a real backend)
        "HOME": str(user_home),
        "AUTHSOME_KEY_SOURCE": "keyring",
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "XDG_DATA_HOME": str(tmp_path / "keyring-data"),
    }
    assert authsome("login", "openai", input=KEY + "\n", env=env).code == 0
    res = authsome("doctor", "--json", env=env)
    checks = {c["check"]: c for c in res.json()["checks"]}
    assert "can ask for it" in checks["master key and the child"]["detail"]


def test_a_master_key_from_the_environment_opens_what_it_sealed(authsome: Runner, user_home: Path) -> None:
    import base64

    env = {"HOME": str(user_home), **NO_KEYRING, "AUTHSOME_MASTER_KEY": base64.b64encode(bytes(32)).decode()}
    assert authsome("login", "openai", input=KEY + "\n", env=env).code == 0
    shown = authsome("get", "openai", "--field", "api_key", "--show-secret", env=env)
    assert shown.code == 0 and shown.out.strip() == KEY
    _, checks = doctor(authsome, user_home, AUTHSOME_MASTER_KEY=env["AUTHSOME_MASTER_KEY"])
    assert checks["key source"]["ok"] and "AUTHSOME_MASTER_KEY" in checks["key source"]["detail"]
    other = {**env, "AUTHSOME_MASTER_KEY": base64.b64encode(b"\x01" * 32).decode()}
    refused = authsome("get", "openai", "--field", "api_key", "--show-secret", env=other)
    assert refused.code == 7 and KEY not in refused.out + refused.err  # another key opens nothing, says so


def test_doctor_says_whether_the_gateway_serves_runs_and_names_one_that_hangs(
    authsome: Runner, authsome_home: Path, user_home: Path
) -> None:
    import fcntl
    import socket

    _, checks = doctor(authsome, user_home)
    assert checks["gateway"]["ok"] and checks["gateway"]["detail"].startswith("not running")

    env = {"HOME": str(user_home), **NO_KEYRING}
    started = authsome("gateway", "start", "--listen", "127.0.0.1:0", "--json", env=env)
    assert started.code == 0, started.err
    try:
        _, checks = doctor(authsome, user_home)
        listen = started.json()["listen"]
        assert checks["gateway"]["ok"] and f"running on {listen}" in checks["gateway"]["detail"]
    finally:
        assert authsome("gateway", "stop", env=env).code == 0

    # a gateway that holds its lock but does not answer (hung): named, with the fix
    files = authsome_home / "profiles" / "default" / "gateway"
    with socket.socket() as silent, open(files / "gateway.lock", "a") as lock:
        silent.bind(("127.0.0.1", 0))  # bound, never listening: refuses the health check
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = {"pid": 4242, "listen": f"127.0.0.1:{silent.getsockname()[1]}", "profile": "default"}
        (files / "state.json").write_text(json.dumps(state))
        _, checks = doctor(authsome, user_home)
    assert not checks["gateway"]["ok"]
    assert "not answering its health check" in checks["gateway"]["detail"]
    assert "authsome gateway stop" in checks["gateway"]["hint"]
