"""TLS session resumption toward upstream servers: a new connection to a host the run already talked to resumes the
last session (a TLS 1.3 ticket or a TLS 1.2 session id) instead of a full handshake with certificate checks.

mitmproxy does a full handshake for every upstream connection; agents open many short connections to the same few API
hosts. A session is kept per (SNI, host, port) and only ever offered to that same name, through the same verifying
TLS context; the server decides whether to accept it, and a refused or stale session simply means a full handshake.
Sessions live in memory for the run only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mitmproxy import connection, http, tls
from mitmproxy.proxy import server_hooks

MAX_SESSIONS = 256
SessionKey = tuple[str | None, Any]


class UpstreamSessions:
    """mitmproxy addon, loaded after mitmproxy's TLS addon (which creates the upstream ``ssl_conn`` it decorates)."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[SessionKey, Any] = OrderedDict()
        self._live: dict[str, tuple[SessionKey, Any]] = {}  # server connection id -> (key, pyOpenSSL connection)
        self._kept: set[str] = set()  # server connection ids whose session was kept at their first response

    def tls_start_server(self, data: tls.TlsData) -> None:
        conn = data.conn
        if data.ssl_conn is None or not isinstance(conn, connection.Server) or conn.address is None:
            return
        key: SessionKey = (conn.sni, tuple(conn.address))
        session = self._sessions.get(key)
        if session is not None:
            data.ssl_conn.set_session(session)
        self._live[conn.id] = (key, data.ssl_conn)

    def tls_failed_server(self, data: tls.TlsData) -> None:
        entry = self._live.pop(data.conn.id, None)
        self._kept.discard(data.conn.id)
        if entry is not None:
            self._sessions.pop(entry[0], None)  # never offer it again

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Keep the session once the first response arrives: a TLS 1.3 ticket comes after the handshake, before any
        response, and the next connection to the host may start before this one ends."""
        conn_id = flow.server_conn.id
        entry = self._live.get(conn_id)
        if entry is not None and conn_id not in self._kept:
            self._kept.add(conn_id)
            self._keep(*entry)

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Keep the connection's latest session (a server may send new tickets at any time)."""
        entry = self._live.pop(data.server.id, None)
        self._kept.discard(data.server.id)
        if entry is not None and data.server.tls_established:
            self._keep(*entry)

    def _keep(self, key: SessionKey, ssl_conn: Any) -> None:
        session = ssl_conn.get_session()
        if session is None:
            return
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
