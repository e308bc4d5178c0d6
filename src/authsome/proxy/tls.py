"""authsome's TLS addon: mitmproxy's own (``TlsConfig``), with a lazily loaded CA, EC leaf keys and upstream sessions.

* **Lazy CA.** Loading the CA key costs about 50 ms (an RSA key check); a run whose command never calls a routed host
  never pays it. A missing CA is still created at start-up, because the child's CA bundle needs its certificate.
* **EC leaf keys** (:class:`LeafKeys`): the child's handshakes are signed with ECDSA, not the CA's RSA key.
* **Upstream session resumption.** mitmproxy does a full handshake for every upstream connection; agents open many
  short connections to the same few API hosts. The last session (a TLS 1.3 ticket or a TLS 1.2 session id) of each
  (SNI, host, port) is offered to the next connection to that same name, through the same verifying TLS context; the
  server decides whether to accept it, and a refused or stale session only means a full handshake. Sessions live in
  memory for the run only.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

CA_OPTIONS = frozenset({"certs", "confdir", "key_size", "cert_passphrase"})
MAX_SESSIONS = 256
SessionKey = tuple[str | None, Any]


def ca_looks_usable(confdir: Path) -> bool:
    """Whether mitmproxy's CA file is there with a key and a certificate (the full check happens on first use)."""
    try:
        data = (confdir.expanduser() / "mitmproxy-ca.pem").read_bytes()
    except OSError:
        return False
    return b"PRIVATE KEY-----" in data and b"BEGIN CERTIFICATE-----" in data


class SessionStore:
    """The latest TLS session per upstream name, and the live upstream connections that may bring a newer one."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[SessionKey, Any] = OrderedDict()
        self._live: dict[str, tuple[SessionKey, Any]] = {}  # server connection id -> (key, pyOpenSSL connection)
        self._kept: set[str] = set()  # connections whose session was kept at their first response

    def offer(self, conn_id: str, key: SessionKey, ssl_conn: Any) -> None:
        """Before the handshake: resume the name's last session, if any, and follow this connection."""
        session = self._sessions.get(key)
        if session is not None:
            ssl_conn.set_session(session)
        self._live[conn_id] = (key, ssl_conn)

    def first_response(self, conn_id: str) -> None:
        """A TLS 1.3 ticket arrives after the handshake, before any response; the next connection to the host may
        start before this one ends, so the session is kept as soon as the first response comes."""
        entry = self._live.get(conn_id)
        if entry is not None and conn_id not in self._kept:
            self._kept.add(conn_id)
            self._keep(*entry)

    def ended(self, conn_id: str, established: bool) -> None:
        """Keep the connection's latest session (a server may send new tickets at any time)."""
        entry = self._live.pop(conn_id, None)
        self._kept.discard(conn_id)
        if entry is not None and established:
            self._keep(*entry)

    def failed(self, conn_id: str) -> None:
        """The handshake failed: never offer that name's session again."""
        entry = self._live.pop(conn_id, None)
        self._kept.discard(conn_id)
        if entry is not None:
            self._sessions.pop(entry[0], None)

    def _keep(self, key: SessionKey, ssl_conn: Any) -> None:
        session = ssl_conn.get_session()
        if session is None:
            return
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)


class LeafKeys:
    """The certificates shown to the child, re-issued for one per-run EC P-256 key.

    mitmproxy gives every leaf certificate its CA's key, usually RSA-2048, so each intercepted connection costs an RSA
    signature. The same certificate (subject, names, validity, extensions — whatever mitmproxy put in) for an EC key,
    signed once per host by the same CA, makes that an ECDSA signature, an order of magnitude cheaper. The key lives in
    memory for the run only.
    """

    MAX_ENTRIES = 512

    def __init__(self) -> None:
        self._key: Any = None
        self._issued: OrderedDict[int, tuple[Any, Any]] = OrderedDict()  # id(mitmproxy's entry) -> (it, ours)

    def rekey(self, entry: Any, ca_key: Any) -> Any:
        """``entry`` (a mitmproxy ``CertStoreEntry``) with the same certificate for the run's EC key."""
        known = self._issued.get(id(entry))
        if known is not None and known[0] is entry:
            return known[1]
        import dataclasses

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from mitmproxy import certs

        if self._key is None:
            self._key = ec.generate_private_key(ec.SECP256R1())
        original = x509.load_pem_x509_certificate(entry.cert.to_pem())
        builder = (
            x509.CertificateBuilder()
            .issuer_name(original.issuer)
            .subject_name(original.subject)
            .serial_number(original.serial_number)
            .not_valid_before(original.not_valid_before_utc)
            .not_valid_after(original.not_valid_after_utc)
            .public_key(self._key.public_key())
        )
        for extension in original.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        ours = dataclasses.replace(entry, cert=certs.Cert(builder.sign(ca_key, hashes.SHA256())), privatekey=self._key)
        self._issued[id(entry)] = (entry, ours)
        while len(self._issued) > self.MAX_ENTRIES:
            self._issued.popitem(last=False)
        return ours


def tls_addon(base: Any) -> Any:
    """A subclass of mitmproxy's ``TlsConfig`` (passed in: mitmproxy is imported only once a run starts)."""
    from mitmproxy import connection, ctx, http, tls
    from mitmproxy.proxy import server_hooks

    class AuthsomeTlsConfig(base):  # type: ignore[misc]
        deferred = False

        def __init__(self) -> None:
            super().__init__()
            self.sessions = SessionStore()
            self.leaf_keys = LeafKeys()

        # -- the CA, loaded on first use -----------------------------------------------------------------------------
        def configure(self, updated: set[str]) -> None:
            if CA_OPTIONS & set(updated) and ca_looks_usable(Path(ctx.options.confdir)) and not ctx.options.certs:
                self.deferred = True
                updated = set(updated) - CA_OPTIONS
            super().configure(updated)

        def running(self) -> None:
            """mitmproxy reloads the CA here (a workaround for a missed ``configure``); ``configure`` did its job."""

        def load_ca(self) -> None:
            if self.deferred:
                self.deferred = False
                super().configure(set(CA_OPTIONS))

        def tls_start_client(self, data: tls.TlsData) -> None:
            self.load_ca()
            super().tls_start_client(data)

        def quic_start_client(self, data: tls.TlsData) -> None:
            self.load_ca()
            super().quic_start_client(data)

        if hasattr(base, "request"):  # mitmproxy 12 answers requests for its CA's revocation list (CRL) itself

            def request(self, flow: http.HTTPFlow) -> None:
                path = flow.request.path
                if self.deferred and not (path.startswith("/mitmproxy-") and path.endswith(".crl")):
                    return  # the CA is not loaded, and this is not a request for its list: nothing to load it for
                self.load_ca()
                super().request(flow)

        def get_cert(self, conn_context: Any) -> Any:
            return self.leaf_keys.rekey(super().get_cert(conn_context), self.certstore.default_privatekey)

        # -- upstream sessions ---------------------------------------------------------------------------------------
        def tls_start_server(self, data: tls.TlsData) -> None:
            super().tls_start_server(data)
            conn = data.conn
            if data.ssl_conn is not None and isinstance(conn, connection.Server) and conn.address is not None:
                self.sessions.offer(conn.id, (conn.sni, tuple(conn.address)), data.ssl_conn)

        def tls_failed_server(self, data: tls.TlsData) -> None:
            self.sessions.failed(data.conn.id)

        def responseheaders(self, flow: http.HTTPFlow) -> None:
            self.sessions.first_response(flow.server_conn.id)

        def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
            self.sessions.ended(data.server.id, data.server.tls_established)

    return AuthsomeTlsConfig


def load_private_key(data: bytes, password: bytes | None) -> Any:
    """A PEM private key, without cryptography's RSA consistency check (about 30 ms of the first intercepted
    connection of every run). Used for the CA's key, the one ``ca.ensure_ca`` made, read from a 0600 file in a
    directory no child of ``run`` can see. An unencrypted key given a password is read without it, as mitmproxy does."""
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        if password is None:
            raise
        return serialization.load_pem_private_key(data, None, unsafe_skip_rsa_key_validation=True)
