"""The run's trust: the proxy CA made once for parallel runs, and the cached bundles, hashed directory and Node file."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import certifi
import pytest
import trustme

from authsome.proxy import ca, trust

HOST = "api.openai.com"


@pytest.fixture
def proxy_ca() -> trustme.CA:
    """Stands in for the proxy CA: what the child must trust for intercepted hosts."""
    return trustme.CA(organization_name="authsome test proxy CA")


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small 'system bundle' of two CAs, so that each test knows every certificate in play."""
    path = tmp_path / "system.pem"
    path.write_bytes(trustme.CA().cert_pem.bytes() + trustme.CA().cert_pem.bytes())
    monkeypatch.setattr(ca, "system_bundle", lambda: path)
    return path


@pytest.fixture
def no_node(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A parent environment whose PATH has no `node` (Mozilla's list then stands for Node's roots)."""
    return {"PATH": "/nonexistent", "HOME": os.environ.get("HOME", "/")}


def serve_tls(issuer: trustme.CA) -> Iterator[int]:
    """A one-connection-at-a-time TLS server for HOST on loopback, its certificate signed by ``issuer``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    issuer.issue_cert(HOST).configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


@pytest.fixture
def server(proxy_ca: trustme.CA) -> Iterator[int]:
    yield from serve_tls(proxy_ca)


def handshake(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw, server_hostname=HOST) as tls:
        return tls.recv(2)


def certs_in(path: Path) -> list[bytes]:
    return ca.pem_certs(path.read_bytes())


# -- the run's files ---------------------------------------------------------------------------------------------


def test_hashed_directory_verifies_the_proxy_ca_and_holds_the_bundle(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, server: int, no_node: dict[str, str]
) -> None:
    entry = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), no_node)
    names = sorted(os.listdir(entry.cert_dir))
    assert len(names) == 3 and all(n.endswith(".0") for n in names)  # two system CAs + the proxy CA
    assert sorted(certs_in(entry.bundle)) == sorted(c for n in names for c in certs_in(entry.cert_dir / n))
    # OpenSSL finds the issuer by its subject hash: the directory alone verifies an intercepted host…
    assert handshake(server, ssl.create_default_context(capath=str(entry.cert_dir))) == b"ok"
    assert handshake(server, ssl.create_default_context(cafile=str(entry.bundle))) == b"ok"
    # …and the names are what `openssl rehash` would give
    if shutil.which("openssl"):
        out = subprocess.run(
            ["openssl", "x509", "-noout", "-subject_hash"], input=proxy_ca.cert_pem.bytes(), capture_output=True
        )
        assert f"{out.stdout.decode().strip()}.0" in names


def test_without_the_proxy_ca_the_directory_would_not_verify(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, no_node: dict[str, str]
) -> None:
    """The check above can fail: a server signed by a CA the entry lacks is refused."""
    entry = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), no_node)
    for port in serve_tls(trustme.CA()):
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(port, ssl.create_default_context(capath=str(entry.cert_dir)))


def test_certificates_with_the_same_subject_each_get_a_file(
    tmp_path: Path, system: Path, no_node: dict[str, str]
) -> None:
    """Two CAs named alike share a subject hash: `<hash>.0` and `<hash>.1`, and OpenSSL finds the right one."""
    first, second = (trustme.CA(organization_name="twin", organization_unit_name="CA") for _ in range(2))
    entry = trust.prepare(tmp_path / "cache", first.cert_pem.bytes() + second.cert_pem.bytes(), no_node)
    names = sorted(os.listdir(entry.cert_dir))
    twins = [n for n in names if n.endswith(".1")]
    assert len(twins) == 1 and twins[0].replace(".1", ".0") in names
    for port in serve_tls(second):
        assert handshake(port, ssl.create_default_context(capath=str(entry.cert_dir))) == b"ok"


def test_upstream_trust_leaves_out_the_proxy_ca_unless_nested(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, no_node: dict[str, str]
) -> None:
    extra = tmp_path / "upstream-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(extra))
    user = tmp_path / "user.pem"
    user.write_bytes(proxy_ca.cert_pem.bytes() + trustme.CA().cert_pem.bytes())  # a bundle holding the proxy CA
    parent = {**no_node, "SSL_CERT_FILE": str(user)}
    entry = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), parent, upstream_ca=extra)
    upstream = certs_in(entry.upstream)
    assert proxy_ca.cert_pem.bytes().strip() not in upstream
    assert certs_in(extra)[0] in upstream and certs_in(user)[1] in upstream and len(upstream) == 4
    assert certs_in(extra)[0] not in certs_in(entry.bundle)  # --upstream-ca is the proxy's, not the child's
    nested = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), parent, upstream_ca=extra, nested=True)
    assert nested.root != entry.root and proxy_ca.cert_pem.bytes().strip() in certs_in(nested.upstream)


def test_node_gets_only_what_it_lacks(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, no_node: dict[str, str]
) -> None:
    corporate = trustme.CA(organization_name="corp")
    extra = tmp_path / "node-extra.pem"
    extra.write_bytes(Path(certifi.where()).read_bytes() + corporate.cert_pem.bytes())  # "the whole system bundle"
    entry = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), {**no_node, "NODE_EXTRA_CA_CERTS": str(extra)})
    assert certs_in(entry.node_bundle) == [proxy_ca.cert_pem.bytes().strip(), corporate.cert_pem.bytes().strip()]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_node_is_asked_for_its_own_roots(tmp_path: Path, proxy_ca: trustme.CA, system: Path) -> None:
    script = "process.stdout.write(require('tls').rootCertificates.join('\\n'))"
    roots = subprocess.run(["node", "-e", script], capture_output=True, check=True).stdout
    corporate = trustme.CA(organization_name="corp")
    extra = tmp_path / "node-extra.pem"
    extra.write_bytes(roots + b"\n" + corporate.cert_pem.bytes())
    parent = {"PATH": os.environ["PATH"], "NODE_EXTRA_CA_CERTS": str(extra)}
    entry = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), parent)
    assert certs_in(entry.node_bundle) == [proxy_ca.cert_pem.bytes().strip(), corporate.cert_pem.bytes().strip()]


def test_a_damaged_certificate_is_left_out(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, server: int, no_node: dict[str, str]
) -> None:
    user = tmp_path / "user.pem"
    user.write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    entry = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), {**no_node, "SSL_CERT_FILE": str(user)})
    assert len(certs_in(entry.bundle)) == 3
    assert handshake(server, ssl.create_default_context(cafile=str(entry.bundle))) == b"ok"


# -- the cache ---------------------------------------------------------------------------------------------------


def test_an_entry_is_reused_and_a_changed_source_gives_a_new_one(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, no_node: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), no_node)
    first.close()

    def no_build(*args: object) -> None:
        raise AssertionError("rebuilt although no source changed")

    with monkeypatch.context() as m:
        m.setattr(trust, "_build", no_build)
        again = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), no_node)
    assert again.root == first.root
    again.close()
    added = trustme.CA()
    system.write_bytes(system.read_bytes() + added.cert_pem.bytes())  # e.g. ca-certificates was updated
    changed = trust.prepare(tmp_path / "cache", proxy_ca.cert_pem.bytes(), no_node)
    assert changed.root != first.root and added.cert_pem.bytes().strip() in certs_in(changed.bundle)
    assert len(os.listdir(changed.cert_dir)) == 4


def test_entries_in_use_are_never_pruned(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, no_node: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    held = trust.prepare(cache, proxy_ca.cert_pem.bytes(), no_node)
    released = []
    for _ in range(trust.KEEP + 2):
        entry = trust.prepare(cache, trustme.CA().cert_pem.bytes(), no_node)
        entry.close()
        released.append(entry.root)
    assert held.bundle.is_file()  # the oldest, but a run still uses it
    kept = released[-(trust.KEEP + 1) :]  # the newest, and KEEP more
    assert not released[0].exists()  # released and older than those: gone
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [held.root.name, *(p.name for p in kept)]
    )


def test_parallel_builds_agree_on_one_whole_entry(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, no_node: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    script = (
        "import sys; from pathlib import Path; from authsome.proxy import ca, trust; "
        f"ca.system_bundle = lambda: Path({str(system)!r}); "
        f"e = trust.prepare(Path({str(cache)!r}), Path(sys.argv[1]).read_bytes(), {no_node!r}); "
        "print(e.root, len(ca.pem_certs(e.bundle.read_bytes())), len(list(e.cert_dir.iterdir())))"
    )
    ca_file = tmp_path / "proxy-ca.pem"
    proxy_ca.cert_pem.write_to_path(str(ca_file))

    def one(_: int) -> str:
        done = subprocess.run([sys.executable, "-c", script, str(ca_file)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    with ThreadPoolExecutor(6) as pool:
        results = set(pool.map(one, range(6)))
    assert len(results) == 1 and results.pop().endswith(" 3 3")
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] != []
    assert not [p for p in cache.iterdir() if p.name.startswith((".build-", ".trash-"))]


def test_an_unwritable_cache_falls_back_to_the_run_directory(
    tmp_path: Path, proxy_ca: trustme.CA, system: Path, server: int, no_node: dict[str, str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    entry = trust.prepare(blocker / "cache", proxy_ca.cert_pem.bytes(), no_node, scratch=tmp_path / "run")
    assert entry.root == tmp_path / "run" / "trust"
    assert handshake(server, ssl.create_default_context(capath=str(entry.cert_dir))) == b"ok"


def test_cache_dir_follows_xdg_then_home() -> None:
    assert trust.cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/authsome/trust")
    assert trust.cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == Path("/h/.cache/authsome/trust")


# -- the CA ------------------------------------------------------------------------------------------------------


def test_parallel_first_runs_share_one_ca(tmp_path: Path) -> None:
    confdir = tmp_path / "mitmproxy"
    script = "import sys; from pathlib import Path; from authsome.proxy import ca; " + (
        "sys.stdout.buffer.write(ca.ensure_ca(Path(sys.argv[1])))"
    )

    def one(_: int) -> bytes:
        done = subprocess.run([sys.executable, "-c", script, str(confdir)], capture_output=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    with ThreadPoolExecutor(6) as pool:
        seen = set(pool.map(one, range(6)))
    assert len(seen) == 1  # every run signs with, and trusts, the same CA
    cert = seen.pop()
    key_file = (confdir / ca.CA_KEY_NAME).read_bytes()
    assert b"PRIVATE KEY" in key_file and ca.pem_certs(key_file) == [cert]
    assert ca.pem_certs((confdir / ca.CA_CERT_NAME).read_bytes()) == [cert]
    assert not [p for p in confdir.iterdir() if p.name.startswith(".authsome-ca-")]


def test_the_ca_comes_from_the_key_file(tmp_path: Path) -> None:
    """A public cert file left by an older race never decides what the child trusts."""
    cert = ca.ensure_ca(tmp_path)
    (tmp_path / ca.CA_CERT_NAME).write_bytes(trustme.CA().cert_pem.bytes())
    assert ca.ensure_ca(tmp_path) == cert


def test_a_key_file_without_a_certificate_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / ca.CA_KEY_NAME).write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\n...\n")
    with pytest.raises(ca.AuthsomeError, match="does not hold a private key and a certificate") as caught:
        ca.ensure_ca(tmp_path)
    assert "move that file away" in (caught.value.hint or "")
    assert (tmp_path / ca.CA_KEY_NAME).read_bytes().startswith(b"-----BEGIN RSA")  # never overwritten
