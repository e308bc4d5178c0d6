"""The interception CA (mitmproxy's, in ``~/.mitmproxy``) and the CA bundles built around it. No mitmproxy here.

mitmproxy creates the CA on its first start: ``mitmproxy-ca.pem`` (private key + cert, 0600) and
``mitmproxy-ca-cert.pem`` (the public cert, the file clients trust). ``ca_status`` tells ``authsome doctor`` whether
that cert exists and whether this machine already trusts it system-wide.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

CA_CERT_NAME = "mitmproxy-ca-cert.pem"
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


def write_bundle(target: Path, sources: Iterable[Path | None], *, exclude: bytes | None = None) -> Path:
    """Concatenate the certificates of ``sources`` (each certificate once, ``exclude`` never) into ``target`` (0600)."""
    seen: set[bytes] = set()
    if exclude:
        seen.add(_der(exclude))
    out: list[bytes] = []
    for src in sources:
        if src is None:
            continue
        try:
            data = src.read_bytes()
        except OSError:  # an unreadable bundle of the user's: the others still count
            continue
        for block in pem_certs(data):
            der = _der(block)
            if der not in seen:
                seen.add(der)
                out.append(block + b"\n")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"".join(out))
    return target


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
