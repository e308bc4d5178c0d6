"""What a run's child and proxy trust, built once per set of sources and kept between runs.

Each entry of the cache, ``~/.cache/authsome/trust/<key>/`` (``$XDG_CACHE_HOME`` if set; never under the CA's
directory, which an isolated child cannot see), holds:

* ``bundle.pem``: the system CAs, the user's CAs (``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``) and the proxy CA, for
  clients that need one file (curl, git, httpx and OpenSSL through ``SSL_CERT_FILE``, …);
* ``certs/``: the same certificates in OpenSSL's hashed layout (``<subject hash>.<n>``, as ``openssl rehash`` makes
  it), for clients that load lazily (``SSL_CERT_DIR``, requests' ``REQUESTS_CA_BUNDLE``): a new TLS context then
  reads the one root a handshake needs instead of parsing every certificate;
* ``node.pem``: the proxy CA plus the certificates of the user's ``NODE_EXTRA_CA_CERTS`` that Node does not ship
  (Node keeps its own roots: the ``node`` on the child's PATH is asked for them when an entry is built; without one,
  Mozilla's list as certifi has it stands for them);
* ``upstream.pem``: the system CAs, the user's CAs and ``--upstream-ca``, never the proxy CA (unless the run is
  nested): what the proxy verifies upstream servers against.

The key is a hash of every source's bytes, so a changed source gives a new entry and a stale one is never served.
An entry is built in a temporary directory and renamed into place under a lock, so no run sees half of one. A run
holds a shared lock on its entry while it lasts; entries that no run holds are pruned when a new one is built (the
most recently used few are kept).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authsome.paths import DIR_MODE, FILE_MODE, file_lock
from authsome.proxy import ca

LAYOUT = b"authsome-trust/1"  # part of every key: a new layout never reuses old entries
KEEP = 4  # entries kept besides the ones in use
IN_USE = ".in-use"
NODE_VAR = "NODE_EXTRA_CA_CERTS"
_STALE_SCRATCH = 3600.0  # seconds after which a leftover build directory is removed
NODE_TIMEOUT = 10.0
_NODE_ROOTS = "process.stdout.write(require('tls').rootCertificates.join('\\n'))"


@dataclass(frozen=True)
class Sources:
    """Everything a run's trust is made of (bytes, so that the key and the build see the same thing)."""

    proxy_ca: bytes
    system: bytes
    user: tuple[bytes, ...]
    upstream_ca: bytes
    node_extra: bytes
    node: str | None  # the `node` on the child's PATH: its own roots are asked for when an entry is built
    node_stamp: bytes  # that program's identity (size, mtime): a new Node is a new entry
    mozilla: bytes  # Mozilla's roots (certifi): what Node ships, when there is no `node` to ask
    nested: bool
    node_env: Mapping[str, str] = field(default_factory=dict, compare=False)  # PATH and HOME (version managers' shims)

    @classmethod
    def gather(cls, proxy_ca: bytes, parent: Mapping[str, str], upstream_ca: Path | None, nested: bool) -> Sources:
        node_extra = parent.get(NODE_VAR)
        node = shutil.which("node", path=parent.get("PATH", os.defpath))
        try:
            stat = os.stat(node) if node else None
        except OSError:
            node, stat = None, None
        return cls(
            proxy_ca=proxy_ca,
            system=_read(ca.system_bundle()),
            user=tuple(_read(p) for p in ca.user_bundles(parent)),
            upstream_ca=_read(upstream_ca),
            node_extra=_read(Path(node_extra)) if node_extra else b"",
            node=node,
            node_stamp=f"{node}|{stat.st_size}|{stat.st_mtime_ns}".encode() if stat else b"",
            mozilla=_read(_mozilla_roots()),
            nested=nested,
            node_env={k: parent[k] for k in ("PATH", "HOME") if k in parent},
        )

    def key(self) -> str:
        digest = hashlib.sha256(LAYOUT)
        parts = [b"nested" if self.nested else b"", self.proxy_ca, self.system, self.upstream_ca, self.node_extra]
        for part in [*parts, self.node_stamp, self.mozilla, *self.user]:
            digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()[:32]

    def node_roots(self) -> list[bytes]:
        """The roots Node trusts without being told: asked of ``node`` itself, else Mozilla's list."""
        if self.node is not None:
            try:
                done = subprocess.run(
                    [self.node, "-e", _NODE_ROOTS],
                    capture_output=True,
                    timeout=NODE_TIMEOUT,
                    env=dict(self.node_env),  # no NODE_OPTIONS: nothing of the user's runs in this process
                    check=True,
                )
                return ca.pem_certs(done.stdout)
            except (OSError, subprocess.SubprocessError):
                pass
        return ca.pem_certs(self.mozilla)


@dataclass
class Trust:
    """One cache entry in use by this run; :meth:`close` lets it be pruned again."""

    root: Path
    _fd: int | None = None
    private_upstream: Path | None = None  # the proxy's own upstream trust, where no child can write (see prepare)

    @property
    def bundle(self) -> Path:
        return self.root / "bundle.pem"

    @property
    def cert_dir(self) -> Path:
        return self.root / "certs"

    @property
    def node_bundle(self) -> Path:
        return self.root / "node.pem"

    @property
    def upstream(self) -> Path:
        return self.private_upstream or self.root / "upstream.pem"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def cache_dir(env: Mapping[str, str]) -> Path:
    """Where the entries live: ``$XDG_CACHE_HOME/authsome/trust``, else ``~/.cache/authsome/trust``."""
    xdg = env.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path(env.get("HOME") or Path.home()) / ".cache"
    return root / "authsome" / "trust"


def prepare(
    base: Path,
    proxy_ca: bytes,
    parent: Mapping[str, str],
    *,
    upstream_ca: Path | None = None,
    nested: bool = False,
    scratch: Path | None = None,
    private: Path | None = None,
) -> Trust:
    """The run's trust: the cached entry for these sources, built first if missing.

    ``base`` is the cache (:func:`cache_dir`). When it cannot be written, the files are built in ``scratch`` for this
    run only. With ``private`` (a directory the child cannot see), the proxy's upstream trust comes from there.
    """
    sources = Sources.gather(proxy_ca, parent, upstream_ca, nested)
    entry = base / sources.key()
    try:
        trust = _cached(base, entry, sources)
    except OSError:
        if scratch is None:
            raise
        root = scratch / "trust"
        _build(root, sources)
        trust = Trust(root)
    if private is not None:
        trust.private_upstream = _private_upstream(private, sources)
    return trust


def _private_upstream(directory: Path, sources: Sources) -> Path:
    """The proxy's upstream trust for ``sources``, kept in ``directory`` (one the child cannot reach: the shared cache
    is writable by a child that is not sandboxed, and a certificate planted there would be trusted for credentials)."""
    path = directory / f"upstream-{sources.key()}.pem"
    if path.is_file():
        return path
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=directory))
    try:
        _write(staging / "upstream.pem", _upstream_certs(sources))
        os.replace(staging / "upstream.pem", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in sorted(directory.glob("upstream-*.pem"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _valid(pem: bytes) -> bool:
    from OpenSSL import crypto  # pyOpenSSL (mitmproxy's dependency): parses as OpenSSL will

    try:
        crypto.load_certificate(crypto.FILETYPE_PEM, pem)
    except crypto.Error:  # a damaged block in a user's bundle: the others still count
        return False
    return True


def _upstream_certs(sources: Sources, valid: Callable[[bytes], bool] = _valid) -> list[bytes]:
    """System CAs, the user's and ``--upstream-ca``: never the proxy CA (unless nested, where it is the upstream)."""
    system, user = ca.pem_certs(sources.system), [c for data in sources.user for c in ca.pem_certs(data)]
    proxy = () if sources.nested else map(_der, ca.pem_certs(sources.proxy_ca))
    return _unique([*system, *user, *ca.pem_certs(sources.upstream_ca)], valid, proxy)


def _cached(base: Path, entry: Path, sources: Sources) -> Trust:
    for _ in range(3):  # an entry pruned between finding it and locking it is built again
        held = _hold(entry)
        if held is not None:
            return held
        base.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        with file_lock(base / ".lock"):
            if not (entry / IN_USE).exists():
                staging = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
                try:
                    _build(staging, sources)
                    os.rename(staging, entry)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                _prune(base, keep=entry)
    raise OSError(f"the trust cache entry {entry} keeps disappearing")


def _hold(entry: Path) -> Trust | None:
    """Take the entry's shared lock, or None when the entry is missing (or was pruned meanwhile)."""
    try:
        fd = os.open(entry / IN_USE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_ino != os.stat(entry / IN_USE).st_ino:
            raise FileNotFoundError
        with contextlib.suppress(OSError):  # a read-only cache (inside an isolated run) still serves
            os.utime(entry)  # most recently used: pruned last
    except FileNotFoundError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return Trust(entry, fd)


def _prune(base: Path, keep: Path) -> None:
    """Remove the entries no run holds, except the most recently used few; and leftovers of crashed builds."""
    entries, now = [], time.time()
    for path in base.iterdir():
        with contextlib.suppress(OSError):
            if path.name.startswith((".build-", ".trash-")) and now - path.stat().st_mtime > _STALE_SCRATCH:
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and not path.name.startswith(".") and path != keep:
                entries.append((path.stat().st_mtime, path))
    for _, path in sorted(entries, reverse=True)[KEEP:]:
        with contextlib.suppress(OSError):
            fd = os.open(path / IN_USE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a run is using it
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=base))
                os.rename(path, trash / "entry")
                shutil.rmtree(trash, ignore_errors=True)
            finally:
                os.close(fd)


def _build(root: Path, sources: Sources) -> None:
    """Write an entry's files into ``root`` (created if needed)."""
    from OpenSSL import crypto  # pyOpenSSL (mitmproxy's dependency): its subject hash is OpenSSL's

    valid = _valid
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    system, user = ca.pem_certs(sources.system), [c for data in sources.user for c in ca.pem_certs(data)]
    proxy = ca.pem_certs(sources.proxy_ca)
    child = _unique([*system, *user, *proxy], valid)
    _write(root / "bundle.pem", child)
    _write(root / "upstream.pem", _upstream_certs(sources, valid))
    node_roots = map(_der, sources.node_roots())
    _write(root / "node.pem", _unique([*proxy, *ca.pem_certs(sources.node_extra)], valid, node_roots))
    certs = root / "certs"
    certs.mkdir(mode=DIR_MODE)
    taken: dict[int, int] = {}
    for pem in child:  # one file per certificate, named <subject hash>.<n> as OpenSSL looks them up
        name_hash: Any = crypto.load_certificate(crypto.FILETYPE_PEM, pem).subject_name_hash()  # int (typed bytes)
        n = taken[name_hash] = taken.get(name_hash, -1) + 1
        _write(certs / f"{name_hash:08x}.{n}", [pem])
    _write(root / IN_USE, [])


def _unique(certs: Iterable[bytes], valid: Callable[[bytes], bool], exclude: Iterable[bytes] = ()) -> list[bytes]:
    """Each valid certificate once, in order, none whose DER is in ``exclude``."""
    seen, out = set(exclude), []
    for pem in certs:
        der = _der(pem)
        if der not in seen:
            seen.add(der)
            if valid(pem):
                out.append(pem)
    return out


def _der(pem: bytes) -> bytes:
    try:
        return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return b""  # never a certificate's DER: such a block is dropped by ``valid``


def _write(path: Path, certs: Iterable[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"".join(cert + b"\n" for cert in certs))


def _read(path: Path | None) -> bytes:
    if path is None:
        return b""
    try:
        return path.read_bytes()
    except OSError:  # an unreadable bundle of the user's: the others still count
        return b""


def _mozilla_roots() -> Path | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx and requests
        return None
    return Path(certifi.where())
