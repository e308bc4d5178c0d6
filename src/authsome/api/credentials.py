"""Reading, obtaining and removing the credentials of a profile: the secrets themselves, their refresh, export,
login, logout and revocation (:class:`Credentials`, on :class:`~authsome.api.core.Core`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal

from authsome.api.core import Core
from authsome.errors import AuthsomeError, CredentialMissing, RefreshFailed, UsageError
from authsome.models import DEFAULT_CONNECTION, ClientConfig, ConnectionInfo, Credential
from authsome.paths import check_name
from authsome.providers.validate import ENV_RE
from authsome.secret import Secret
from authsome.store.credentials import missing

if TYPE_CHECKING:
    from authsome.flows.ui import FlowUI
    from authsome.providers.schema import Provider

ExportFormat = Literal["env", "shell", "json"]
REVEALABLE_FIELDS = ("api_key", "access_token")


@dataclass
class LoginOptions:
    """How ``login`` should obtain a credential; every field has a sensible default."""

    connection: str = DEFAULT_CONNECTION
    force: bool = False
    flow: str | None = None
    scopes: Sequence[str] | None = None
    client_id: str | None = None
    base_url: str | None = None
    reset: bool = False
    no_browser: bool = False
    browser: bool = False  # ask for a key or client secret in a local browser form, even without a terminal
    redirect_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Credentials(Core):
    """The credentials of the profile: read (refreshed first when close to expiry), exported, obtained, removed."""

    def reveal(self, provider: str, connection: str = DEFAULT_CONNECTION, field: str = "api_key") -> Secret:
        """One secret value, explicitly asked for. Refresh tokens never leave the store."""
        self.refuse_inside_run("reveal a secret")
        if field not in REVEALABLE_FIELDS:
            raise UsageError(
                f"field {field!r} cannot be revealed",
                f"choose one of {', '.join(REVEALABLE_FIELDS)}; refresh tokens never leave the store",
            )
        cred = self._credential(provider, connection)
        value: Secret | None = getattr(cred, field)
        if value is None:
            other = "access_token" if field == "api_key" else "api_key"
            kind = "an OAuth" if cred.kind == "oauth2" else "an API-key"
            raise UsageError(f"{provider}/{connection} has no {field}", f"it is {kind} connection: use --field {other}")
        self.audit.append("reveal", provider=provider, connection=connection, field=field)
        return value

    def credential(self, provider: str, connection: str = DEFAULT_CONNECTION) -> Credential:
        """The usable credential of a connection, refreshed first when it is close to expiry."""
        self.refuse_inside_run("read a credential")
        return self._credential(provider, connection)

    def _credential(self, provider: str, connection: str) -> Credential:
        self.provider(provider)
        cred = self.store.load(provider, connection)
        self._check_valid(provider, connection)
        if cred.kind == "oauth2" and _needs_refresh(cred):
            cred = self._refresh(self.connection_provider(provider, cred.metadata), connection)
        return cred

    def _check_valid(self, provider: str, connection: str) -> None:
        """Refuse a connection whose refresh token the provider rejected: that token is never sent again."""
        info = self.store.info(provider, connection)
        if info is not None and info.status == "invalid":
            command = _relogin(provider, connection)
            raise CredentialMissing(
                f"{provider}/{connection} is no longer valid" + (f" ({info.error})" if info.error else ""),
                f"run `{command}`",
                fix_command=command,
            )

    def headers_for(self, provider: str, connection: str = DEFAULT_CONNECTION) -> dict[str, str]:
        """The request headers that authenticate to ``provider`` (what the proxy injects)."""
        self.refuse_inside_run("read a credential")
        return self._headers_for(provider, connection)

    def _headers_for(self, provider: str, connection: str = DEFAULT_CONNECTION) -> dict[str, str]:
        """What the proxy of ``run`` injects: the same headers, asked for by the proxy itself (never the child)."""
        prov = self.provider(provider)
        secret = self._credential(provider, connection).secret_for_request()
        try:
            name, value = prov.header(secret.reveal())
        except UsageError as exc:  # the provider does not know which connection it was: say it here
            command = _relogin(provider, connection)
            raise UsageError(exc.message, f"run `{command}`", fix_command=command) from None
        return {name: value}

    def export(
        self, provider: str, connection: str = DEFAULT_CONNECTION, fmt: ExportFormat = "env", prefix: str = ""
    ) -> str:
        """The provider's export variables as ``env`` lines, ``shell`` exports (safe to eval) or ``json``."""
        import json

        self.refuse_inside_run("export a secret")
        if prefix and not ENV_RE.fullmatch(prefix):  # (the provider's own names were checked when it loaded)
            raise UsageError(
                f"--prefix {prefix!r} cannot start a variable name",
                "use ASCII letters, digits and _, not a digit first",
            )
        prov = self.provider(provider)
        cred = self._credential(provider, connection)
        values: dict[str, str] = {}
        urls = self.connection_provider(provider, cred.metadata).export_urls()  # authsome's BASE_URL/API_URL
        for var, what in prov.export_env.items():
            if what in urls:
                values[f"{prefix}{var}"] = urls[what]
                continue
            secret = cred.api_key if what == "api_key" else cred.access_token if what == "access_token" else None
            if secret is not None:
                values[f"{prefix}{var}"] = secret.reveal()
        if not values:
            raise UsageError(f"{provider} defines no export variables", f"use `authsome get {provider} --field ...`")
        self.audit.append("export", provider=provider, connection=connection, format=fmt, variables=sorted(values))
        if fmt == "json":
            return json.dumps(values, indent=2, sort_keys=True)
        if fmt == "shell":
            import shlex

            return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in values.items())
        return "\n".join(f"{k}={v}" for k, v in values.items())

    # -- writing -------------------------------------------------------------------------------------------------
    def login(
        self,
        provider: str,
        options: LoginOptions | None = None,
        *,
        ui: FlowUI | None = None,
        stdin: IO[str] | None = None,
    ) -> ConnectionInfo:
        """Obtain a credential through the provider's flow and store it; nothing is stored if anything fails."""
        opts = options or LoginOptions()
        check_name("connection", opts.connection)
        prov = self.provider(provider)
        if opts.base_url:
            prov = prov.with_base_url(opts.base_url)
        existing = self.store.info(provider, opts.connection)
        if existing is not None and not opts.force and existing.status != "invalid":
            raise UsageError(
                f"{provider}/{opts.connection} is already connected",
                f"use `authsome login {provider}{_conn_flag(opts.connection)} --force` to replace it",
            )
        if ui is None:
            from authsome.flows.ui import PlainUI

            ui = PlainUI()
        if opts.browser and opts.no_browser:
            raise UsageError("--browser and --no-browser contradict each other", "use one of them")
        form = False if opts.no_browser else (True if opts.browser else None)  # None: only for a person at a terminal
        if prov.auth_type == "api_key":
            from authsome.flows.api_key import obtain_api_key

            if opts.flow not in (None, "api_key") or opts.scopes is not None or opts.client_id is not None:
                raise UsageError(
                    f"{prov.display_name} uses an API key: --flow, --scopes and --client-id do not apply",
                    f"run `authsome login {provider}{_conn_flag(opts.connection)}` without them",
                )

            cred = obtain_api_key(prov, env=self.env, stdin=stdin or sys.stdin, ui=ui, allow_browser=form)
            client: ClientConfig | None = None
        else:
            from authsome.flows import oauth

            stored_client = None if opts.reset else self.store.client(provider)
            cred, client = oauth.login(
                prov,
                client=stored_client,
                ui=ui,
                env=self.env,
                scopes=opts.scopes,
                flow=opts.flow,
                client_id=opts.client_id,
                no_browser=opts.no_browser,
                secret_form=form,
                redirect_port=opts.redirect_port,
            )
        if opts.base_url:
            cred = Credential(**{**cred.__dict__, "metadata": {**cred.metadata, "base_url": opts.base_url}})
        with self.store.vault.transaction():
            if client is not None:
                self.store.save_client(provider, client)
            self.store.save(provider, opts.connection, cred)
        self.audit.append("login", provider=provider, connection=opts.connection, kind=cred.kind, account=cred.account)
        return self.get(provider, opts.connection)

    def _refresh(self, prov: Provider, connection: str) -> Credential:
        """Single-flight refresh: lock, re-read, refresh only if still needed, save access and rotated refresh token."""
        from authsome.flows import refresh as refresh_flow
        from authsome.store.credentials import connection_key

        with self.store.vault.lock(connection_key(prov.name, connection)):  # a shared store: this connection only
            cred = self.store.load(prov.name, connection)
            self._check_valid(prov.name, connection)  # another process may have had the refresh token rejected
            if not _needs_refresh(cred):
                return cred
            expired = (cred.seconds_left() or 0) <= 0
            client = self.store.client(prov.name)
            if cred.refresh_token is None or client is None:
                if not expired:
                    return cred
                command = refresh_flow.relogin_command(prov.name, connection)
                raise RefreshFailed(
                    f"{prov.name}/{connection} expired and cannot be refreshed (no refresh token)",
                    f"run `{command}`",
                    fix_command=command,
                )
            try:
                fresh: Credential = refresh_flow.refresh(prov, client, cred, connection=connection)
            except RefreshFailed as exc:
                self.audit.append("refresh", provider=prov.name, connection=connection, ok=False, reason=exc.message)
                if getattr(exc, "invalid_grant", False):
                    self.store.set_status(prov.name, connection, "invalid", "refresh token rejected (invalid_grant)")
                    command = refresh_flow.relogin_command(prov.name, connection)
                    raise RefreshFailed(
                        f"{prov.name}/{connection}: the provider rejected the refresh token",
                        f"run `{command}`",
                        fix_command=command,
                    ) from None
                if not expired:
                    return cred  # still usable; try again next time
                raise
            self.store.save(prov.name, connection, fresh)
            self.audit.append("refresh", provider=prov.name, connection=connection, ok=True)
            return fresh

    def logout(self, provider: str, connection: str = DEFAULT_CONNECTION) -> bool:
        """Revoke one connection at the provider when it can (best effort), then delete it locally."""
        info = self.get(provider, connection)
        remote = self._revoke_remote(self.connection_provider(provider, info.metadata), connection, strict=False)
        deleted = bool(self.store.delete(provider, connection))
        self.audit.append("logout", provider=provider, connection=connection, revoked_remotely=remote)
        return deleted

    def revoke(self, provider: str) -> dict[str, Any]:
        """Revoke every connection of ``provider`` at the provider, then delete them and the stored client."""
        self.provider(provider)
        conns = self.store.connections(provider)
        if not conns:
            raise _nothing_stored(provider)
        revoked = {
            c.name: self._revoke_remote(self.connection_provider(provider, c.metadata), c.name, strict=True)
            for c in conns
        }
        with self.store.vault.transaction():
            self.store.delete(provider)
            self.store.delete_client(provider)
        self.audit.append("revoke", provider=provider, connections=sorted(revoked), revoked_remotely=revoked)
        return {"provider": provider, "revoked_remotely": revoked, "removed": sorted(revoked)}

    def remove(self, provider: str, connection: str | None = None) -> dict[str, Any]:
        """Delete local state only (never contacts the provider); without ``connection`` also the user provider file."""
        known = provider in self.registry.names()
        with self.store.vault.transaction():
            removed = self.store.delete(provider, connection)
            client = self.store.delete_client(provider) if connection is None else False
        uninstalled = self.registry.unregister(provider) if connection is None else False
        if uninstalled:
            from authsome.store.backend import provider_removed

            provider_removed(self.store_url, provider)
        if not (known or removed or client or uninstalled):
            self.provider(provider)  # raises ProviderNotFound, worded as everywhere else
        if connection is not None and not removed:
            raise missing(provider, connection)
        if not (removed or client or uninstalled):
            raise _nothing_stored(provider)
        if removed or client:
            self.audit.append("remove", provider=provider, connection=connection, connections_removed=removed)
        return {
            "provider": provider,
            "connections_removed": removed,
            "client_removed": client,
            "uninstalled": uninstalled,
        }

    def _revoke_remote(self, prov: Provider, connection: str, *, strict: bool) -> bool:
        """Revoke at the provider's endpoint (from its JSON, the stored client or discovery); False when it has none."""
        if prov.oauth is None:
            return False
        from authsome.flows import refresh as refresh_flow

        try:
            cred = self.store.load(prov.name, connection)
            client = self.store.client(prov.name)
            if client is None:
                return False
            return bool(refresh_flow.revoke(prov, client, cred, connection=connection))
        except AuthsomeError:
            if strict:
                raise
            return False


def _needs_refresh(cred: Credential) -> bool:
    if cred.expires_at is None:
        return False
    from authsome.flows.refresh import needs_refresh

    return needs_refresh(cred, time.time())


def _relogin(provider: str, connection: str) -> str:
    from authsome.flows.refresh import relogin_command

    return relogin_command(provider, connection)


def _conn_flag(connection: str) -> str:
    return "" if connection == DEFAULT_CONNECTION else f" --connection {connection}"


def _nothing_stored(provider: str) -> CredentialMissing:
    return CredentialMissing(f"no credential stored for {provider}", "run `authsome list` to see what is stored")
