"""The interception CA (mitmproxy's, in ``~/.mitmproxy``) and the CA bundles built around it.

The CA is mitmproxy's: ``mitmproxy-ca.pem`` (private key + cert, 0600) and ``mitmproxy-ca-cert.pem`` (the public cert,
the file users install). :func:`ensure_ca` creates a missing one once, under a lock, for every run started at the same
time (mitmproxy's own start would let each make its own); that is the only use of mitmproxy here. ``ca_status`` tells
``authsome doctor`` whether that cert exists and whether this machine already trusts it system-wide.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from authsome.errors import AuthsomeError
from authsome.paths import DIR_MODE, file_lock

CA_CERT_NAME = "mitmproxy-ca-cert.pem"
CA_KEY_NAME = "mitmproxy-ca.pem"  # key + certificate: what mitmproxy signs with
CA_BASENAME = "mitmproxy"
CA_KEY_SIZE = 2048  # mitmproxy's default ``key_size``
CA_LOCK_NAME = "authsome-ca.lock"
USER_BUNDLE_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS (OpenSSL's view), Alpine, BSDs
)
_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


def default_confdir() -> Path:
    """mitmproxy's own default: ``~/.mitmproxy``."""
    return Path.home() / ".mitmproxy"


def ca_cert_path(confdir: Path | None = None) -> Path:
    """Where the CA's public certificate lives."""
    return (confdir or default_confdir()).expanduser() / CA_CERT_NAME


def ensure_ca(confdir: Path | None = None) -> bytes:
    """The certificate (PEM) of the CA the proxy signs with; the CA is created first if there is none.

    Creation happens once, under a lock in ``confdir``: mitmproxy writes the CA's files into a temporary directory,
    and they are renamed into place with the key file last, so a run that sees the key file sees a whole CA. The
    certificate is taken from the key file itself, so it always matches the key, whatever ``mitmproxy-ca-cert.pem``
    holds.
    """
    confdir = (confdir or default_confdir()).expanduser()
    try:
        cert = _ca_cert(confdir)
        if cert is not None:
            return cert
        confdir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        with file_lock(confdir / CA_LOCK_NAME):
            cert = _ca_cert(confdir)
            if cert is None:
                _create_ca(confdir)
                cert = _ca_cert(confdir)
    except OSError as exc:
        raise AuthsomeError(
            f"the proxy did not start: cannot create its CA in {confdir} ({exc.strerror or exc})",
            f"make {confdir} a directory you can write to, or run again with --verbose",
        ) from None
    assert cert is not None
    return cert


def _ca_cert(confdir: Path) -> bytes | None:
    """The CA certificate in the key file, or None when there is no CA yet."""
    path = confdir / CA_KEY_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    certs = pem_certs(data)
    if b"PRIVATE KEY-----" not in data or not certs:
        raise AuthsomeError(
            f"the proxy CA {path} does not hold a private key and a certificate",
            "move that file away; the next `authsome run` creates a new CA",
        )
    return certs[0]


def _create_ca(confdir: Path) -> None:
    from mitmproxy.certs import CertStore

    staging = Path(tempfile.mkdtemp(prefix=".authsome-ca-", dir=confdir))
    try:
        CertStore.create_store(staging, CA_BASENAME, CA_KEY_SIZE)
        names = sorted(os.listdir(staging), key=lambda name: name == CA_KEY_NAME)  # the key file last
        for name in names:
            os.replace(staging / name, confdir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def system_bundle() -> Path | None:
    """The system trust store as one PEM file: OpenSSL's configured file, a well-known path, or certifi."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.openssl_cafile, *_SYSTEM_BUNDLES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx and requests
        return None
    return Path(certifi.where())


def user_bundles(env: Mapping[str, str], extra: Iterable[Path | None] = ()) -> list[Path]:
    """Bundles the user already trusts (``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``) plus ones named explicitly."""
    found = [Path(env[name]) for name in USER_BUNDLE_VARS if env.get(name) and Path(env[name]).is_file()]
    found.extend(p for p in extra if p is not None)
    return found


def pem_certs(data: bytes) -> list[bytes]:
    """The PEM certificate blocks in ``data``."""
    return _PEM_RE.findall(data)


def ca_status(confdir: Path | None = None) -> dict[str, object]:
    """What ``doctor`` reports: the CA cert's path, whether it exists, and whether it is trusted system-wide.

    ``trusted_system`` is True/False, or None when it cannot be told on this platform; ``trusted_certifi`` says
    whether Python's certifi bundle (used by requests/httpx unless told otherwise) holds it.
    """
    path = ca_cert_path(confdir)
    status: dict[str, object] = {"path": str(path), "exists": path.is_file(), "trusted_system": None}
    if not path.is_file():
        status["trusted_system"] = False
        return status
    blocks = pem_certs(path.read_bytes())
    if not blocks:
        status["error"] = "the file holds no PEM certificate"
        return status
    der = _der(blocks[0])
    if sys.platform == "darwin":
        status["trusted_system"] = _macos_trusts(path)
    else:
        bundle = system_bundle()
        status["system_bundle"] = str(bundle) if bundle else None
        status["trusted_system"] = bundle is not None and _bundle_has(bundle, der)
    try:
        import certifi

        status["trusted_certifi"] = _bundle_has(Path(certifi.where()), der)
    except ImportError:  # pragma: no cover
        status["trusted_certifi"] = None
    return status


def _der(pem_block: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_block.decode("ascii"))


def _bundle_has(bundle: Path, der: bytes) -> bool:
    try:
        data = bundle.read_bytes()
    except OSError:
        return False
    return any(_der(block) == der for block in pem_certs(data))


def _macos_trusts(cert: Path) -> bool | None:  # pragma: no cover - macOS only
    try:
        done = subprocess.run(
            ["/usr/bin/security", "verify-cert", "-c", str(cert)], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode == 0
