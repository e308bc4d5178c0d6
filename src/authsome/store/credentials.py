"""Connections and OAuth clients as records: the mapping between the models and the vault's documents.

Record keys: ``connection/<provider>/<name>`` and ``client/<provider>``. Non-secret fields stay readable (so
``list`` needs no key); secrets (API key, tokens, client secret) are envelopes bound to their record key.
"""

from __future__ import annotations

import time

from authsome.errors import CredentialMissing, StoreUnavailable
from authsome.models import DEFAULT_CONNECTION, ClientConfig, ConnectionInfo, ConnectionStatus, Credential
from authsome.store.backend import Doc, RecordDamaged, RecordStore

CREDENTIAL_SECRETS = ("api_key", "access_token", "refresh_token", "id_token")


def connection_key(provider: str, name: str) -> str:
    return f"connection/{provider}/{name}"


def client_key(provider: str) -> str:
    return f"client/{provider}"


def missing(provider: str, name: str) -> CredentialMissing:
    """The one wording for a connection that is not stored, with the login command that creates it."""
    flag = "" if name == DEFAULT_CONNECTION else f" --connection {name}"
    return CredentialMissing(f"no credential stored for {provider}/{name}", f"run `authsome login {provider}{flag}`")


def _damaged(provider: str, name: str, exc: RecordDamaged) -> StoreUnavailable:
    return StoreUnavailable(
        f"the stored credential {provider}/{name} failed to load: {exc.reason}",
        f"run `authsome remove {provider} --connection {name}` and log in again",
    )


class CredentialStore:
    """Domain operations on one profile's vault."""

    def __init__(self, vault: RecordStore) -> None:
        self.vault = vault

    # -- connections ---------------------------------------------------------------------------------------------
    def connections(self, provider: str | None = None) -> list[ConnectionInfo]:
        """Metadata of every stored connection (no decryption). Damaged records are listed with ``error`` set."""
        prefix = f"connection/{provider}/" if provider else "connection/"
        out = []
        for key, doc in self.vault.read_prefix(prefix):
            _, prov, name = key.split("/", 2)
            if isinstance(doc, RecordDamaged):
                out.append(ConnectionInfo(prov, name, "api_key", "invalid", error=doc.reason))
            else:
                out.append(_info(prov, name, doc))
        return out

    def info(self, provider: str, name: str) -> ConnectionInfo | None:
        """Metadata of one connection, or None."""
        try:
            doc = self.vault.read(connection_key(provider, name))
        except RecordDamaged as exc:
            raise _damaged(provider, name, exc) from None
        return None if doc is None else _info(provider, name, doc)

    def load(self, provider: str, name: str) -> Credential:
        """Decrypt one connection's credential. :class:`CredentialMissing` if absent."""
        key = connection_key(provider, name)
        try:
            doc = self.vault.read(key)
            if doc is None:
                raise missing(provider, name)
            secrets = {f: self.vault.reveal(key, doc, f) for f in CREDENTIAL_SECRETS}
        except RecordDamaged as exc:
            raise _damaged(provider, name, exc) from None
        return Credential(
            kind=doc.get("kind", "api_key"),
            token_type=doc.get("token_type") or "Bearer",
            expires_at=doc.get("expires_at"),
            scopes=tuple(doc.get("scopes") or ()),
            account=doc.get("account"),
            metadata=dict(doc.get("metadata") or {}),
            **secrets,
        )

    def save(self, provider: str, name: str, cred: Credential, status: ConnectionStatus = "connected") -> None:
        """Create or replace one connection (inside a transaction)."""
        key = connection_key(provider, name)
        now = time.time()
        with self.vault.transaction() as txn:
            try:
                previous = self.vault.read(key)
            except RecordDamaged:
                previous = None
            doc: Doc = {
                "v": 1,
                "kind": cred.kind,
                "status": status,
                "token_type": cred.token_type,
                "expires_at": cred.expires_at,
                "scopes": list(cred.scopes),
                "account": cred.account,
                "metadata": cred.metadata,
                "created_at": (previous or {}).get("created_at", now),
                "updated_at": now,
            }
            txn.write(key, doc, {f: getattr(cred, f) for f in CREDENTIAL_SECRETS})

    def set_status(self, provider: str, name: str, status: ConnectionStatus, error: str | None = None) -> None:
        """Change a connection's status, keeping its secrets as they are."""
        with self.vault.transaction() as txn:
            txn.update_plain(
                connection_key(provider, name), {"status": status, "updated_at": time.time(), "last_error": error}
            )

    def delete(self, provider: str, name: str | None = None) -> int:
        """Delete one connection (or all of a provider's when ``name`` is None); returns how many."""
        with self.vault.transaction() as txn:
            if name is not None:
                return int(txn.delete(connection_key(provider, name)))
            return txn.delete_prefix(f"connection/{provider}/")

    # -- OAuth clients -------------------------------------------------------------------------------------------
    def client(self, provider: str) -> ClientConfig | None:
        """The stored OAuth client of a provider, or None."""
        key = client_key(provider)
        try:
            doc = self.vault.read(key)
            if doc is None:
                return None
            secret = self.vault.reveal(key, doc, "client_secret")
        except RecordDamaged as exc:
            raise _damaged(provider, "client", exc) from None
        return ClientConfig(
            client_id=doc["client_id"],
            client_secret=secret,
            registered=bool(doc.get("registered")),
            redirect_uri=doc.get("redirect_uri"),
            metadata=dict(doc.get("metadata") or {}),
        )

    def save_client(self, provider: str, client: ClientConfig) -> None:
        with self.vault.transaction() as txn:
            doc: Doc = {
                "v": 1,
                "client_id": client.client_id,
                "registered": client.registered,
                "redirect_uri": client.redirect_uri,
                "metadata": client.metadata,
            }
            txn.write(client_key(provider), doc, {"client_secret": client.client_secret})

    def delete_client(self, provider: str) -> bool:
        with self.vault.transaction() as txn:
            return txn.delete(client_key(provider))

    def providers_with_state(self) -> tuple[set[str], set[str]]:
        """(providers with at least one connection, providers with a stored client) — from keys alone."""
        connected, configured = set(), set()
        for key in self.vault.keys(""):
            kind, _, rest = key.partition("/")
            if kind == "connection":
                connected.add(rest.split("/", 1)[0])
            elif kind == "client":
                configured.add(rest)
        return connected, configured


def _info(provider: str, name: str, doc: Doc) -> ConnectionInfo:
    status: ConnectionStatus = doc.get("status", "connected")
    expires_at = doc.get("expires_at")
    if status == "connected" and expires_at is not None and expires_at <= time.time():
        status = "expired"
    return ConnectionInfo(
        provider=provider,
        name=name,
        kind=doc.get("kind", "api_key"),
        status=status,
        scopes=tuple(doc.get("scopes") or ()),
        expires_at=expires_at,
        account=doc.get("account"),
        created_at=doc.get("created_at"),
        updated_at=doc.get("updated_at"),
        has_refresh_token="refresh_token" in (doc.get("secrets") or {}),
        metadata=dict(doc.get("metadata") or {}),
        error=doc.get("last_error"),
    )
