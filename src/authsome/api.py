"""The Authsome facade: the one place that wires the store, the providers, the login flows and the proxy.

Everything the CLI does goes through here, so the library offers the same operations::

    from authsome import Authsome
    auth = Authsome()                      # $AUTHSOME_HOME or ~/.authsome, profile "default"
    auth.headers_for("openai")            # {"Authorization": "Bearer sk-…"} (refreshed first if needed)
"""

from __future__ import annotations

import builtins
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from authsome.errors import AuthsomeError, CredentialMissing, RefreshFailed, UsageError
from authsome.models import DEFAULT_CONNECTION, DEFAULT_PROFILE, ClientConfig, ConnectionInfo, Credential
from authsome.paths import Home, check_name
from authsome.secret import Secret
from authsome.store.credentials import CredentialStore
from authsome.store.vault import Vault

if TYPE_CHECKING:
    from authsome.flows.ui import FlowUI
    from authsome.providers.registry import Registry
    from authsome.providers.schema import Provider
    from authsome.store.audit import AuditLog, VerifyResult
    from authsome.store.keysource import KeySource

ProviderState = Literal["available", "configured", "connected"]
ExportFormat = Literal["env", "shell", "json"]
REVEALABLE_FIELDS = ("api_key", "access_token")


@dataclass(frozen=True)
class ProviderStatus:
    """One row of ``authsome list``: a provider and what this profile holds for it."""

    name: str
    display_name: str
    auth_type: str
    flow: str
    source: str
    state: ProviderState
    connections: tuple[ConnectionInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "auth_type": self.auth_type,
            "flow": self.flow,
            "source": self.source,
            "state": self.state,
            "connections": [c.redacted() for c in self.connections],
        }


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
    redirect_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Authsome:
    """Credentials of one profile in one authsome home."""

    def __init__(
        self, home: Path | str | None = None, profile: str = DEFAULT_PROFILE, env: Mapping[str, str] | None = None
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.home = Home.resolve(Path(home) if home is not None else None)
        self.profile = check_name("profile", profile)

    # -- wiring --------------------------------------------------------------------------------------------------
    @cached_property
    def registry(self) -> Registry:
        from authsome.providers.registry import Registry

        return Registry(self.home.providers_dir)

    @cached_property
    def key_source(self) -> KeySource:
        from authsome.store import keysource

        return keysource.select(self.home, self.env)

    @cached_property
    def store(self) -> CredentialStore:
        vault = Vault(self.home.profile_dir(self.profile), self.profile, lambda: self.key_source)
        return CredentialStore(vault)

    @cached_property
    def audit(self) -> AuditLog:
        from authsome.store.audit import AuditLog

        return AuditLog(self.store.vault)

    def provider(self, name: str) -> Provider:
        """The provider definition (a user file overrides a bundled one)."""
        return self.registry.get(name)

    def connection_provider(self, name: str, metadata: Mapping[str, Any]) -> Provider:
        """The provider as one connection uses it: with the ``--base-url`` it was logged in with (a self-hosted
        instance), so that its refreshes, revocation and proxy routes go to that instance, never the default one."""
        prov = self.provider(name)
        base_url = metadata.get("base_url")
        if prov.oauth is None or not isinstance(base_url, str) or not base_url:
            return prov  # (a provider file that dropped its OAuth block has no base URL to apply)
        return prov.with_base_url(base_url)

    # -- reading -------------------------------------------------------------------------------------------------
    def list(self) -> list[ProviderStatus]:
        """Every known provider with this profile's state for it."""
        by_provider: dict[str, list[ConnectionInfo]] = {}
        for info in self.store.connections():
            by_provider.setdefault(info.provider, []).append(info)
        _, configured = self.store.providers_with_state()
        rows = []
        for p in self.registry.all():
            conns = tuple(by_provider.get(p.name, ()))
            state: ProviderState = "connected" if conns else ("configured" if p.name in configured else "available")
            rows.append(ProviderStatus(p.name, p.display_name, p.auth_type, p.flow, p.source, state, conns))
        return rows

    def get(self, provider: str, connection: str = DEFAULT_CONNECTION) -> ConnectionInfo:
        """Metadata of one connection (never a secret)."""
        self.provider(provider)
        info = self.store.info(provider, connection)
        if info is None:
            raise _missing(provider, connection)
        return info

    def reveal(self, provider: str, connection: str = DEFAULT_CONNECTION, field: str = "api_key") -> Secret:
        """One secret value, explicitly asked for. Refresh tokens never leave the store."""
        if field not in REVEALABLE_FIELDS:
            raise UsageError(
                f"field {field!r} cannot be revealed",
                f"choose one of {', '.join(REVEALABLE_FIELDS)}; refresh tokens never leave the store",
            )
        cred = self.credential(provider, connection)
        value: Secret | None = getattr(cred, field)
        if value is None:
            raise UsageError(f"{provider}/{connection} has no {field}", f"it is a {cred.kind} credential")
        self.audit.append("reveal", provider=provider, connection=connection, field=field)
        return value

    def credential(self, provider: str, connection: str = DEFAULT_CONNECTION) -> Credential:
        """The usable credential of a connection, refreshed first when it is close to expiry."""
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
            raise CredentialMissing(
                f"{provider}/{connection} is no longer valid" + (f" ({info.error})" if info.error else ""),
                f"run `authsome login {provider}{_conn_flag(connection)} --force`",
            )

    def headers_for(self, provider: str, connection: str = DEFAULT_CONNECTION) -> dict[str, str]:
        """The request headers that authenticate to ``provider`` (what the proxy injects)."""
        prov = self.provider(provider)
        name, value = prov.header(self.credential(provider, connection).secret_for_request().reveal())
        return {name: value}

    def export(
        self, provider: str, connection: str = DEFAULT_CONNECTION, fmt: ExportFormat = "env", prefix: str = ""
    ) -> str:
        """The provider's export variables as ``env`` lines, ``shell`` exports (safe to eval) or ``json``."""
        import json

        prov = self.provider(provider)
        cred = self.credential(provider, connection)
        values: dict[str, str] = {}
        for var, what in prov.export_env.items():
            secret = cred.api_key if what == "api_key" else cred.access_token
            if secret is not None:
                values[f"{prefix}{var}"] = secret.reveal()
        if not values:
            raise UsageError(f"{provider} defines no export variables", f"use `authsome get {provider} --field ...`")
        self.audit.append("export", provider=provider, connection=connection, format=fmt, variables=sorted(values))
        for var in values:
            if not var.replace("_", "a").isalnum() or var[0].isdigit():
                raise UsageError(
                    f"--prefix {prefix!r} makes an invalid variable name {var!r}", "use letters, digits, _"
                )
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
        if existing is not None and not opts.force and existing.status not in ("invalid", "revoked"):
            raise UsageError(
                f"{provider}/{opts.connection} is already connected",
                f"use `authsome login {provider}{_conn_flag(opts.connection)} --force` to replace it",
            )
        if ui is None:
            from authsome.flows.ui import PlainUI

            ui = PlainUI()
        if prov.auth_type == "api_key":
            from authsome.flows.api_key import obtain_api_key

            if opts.flow not in (None, "api_key") or opts.scopes is not None or opts.client_id is not None:
                raise UsageError(
                    f"{prov.display_name} uses an API key: --flow, --scopes and --client-id do not apply",
                    f"run `authsome login {provider}` without them",
                )

            cred = obtain_api_key(
                prov, env=self.env, stdin=stdin or sys.stdin, ui=ui, allow_browser=not opts.no_browser
            )
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

        with self.store.vault.lock():
            cred = self.store.load(prov.name, connection)
            self._check_valid(prov.name, connection)  # another process may have had the refresh token rejected
            if not _needs_refresh(cred):
                return cred
            expired = (cred.seconds_left() or 0) <= 0
            client = self.store.client(prov.name)
            if cred.refresh_token is None or client is None:
                if not expired:
                    return cred
                raise RefreshFailed(
                    f"{prov.name}/{connection} expired and cannot be refreshed (no refresh token)",
                    f"run `authsome login {prov.name}{_conn_flag(connection)} --force`",
                )
            try:
                fresh: Credential = refresh_flow.refresh(prov, client, cred)
            except RefreshFailed as exc:
                self.audit.append("refresh", provider=prov.name, connection=connection, ok=False, reason=exc.message)
                if getattr(exc, "invalid_grant", False):
                    self.store.set_status(prov.name, connection, "invalid", "refresh token rejected (invalid_grant)")
                    raise RefreshFailed(
                        f"{prov.name}/{connection}: the provider rejected the refresh token",
                        f"run `authsome login {prov.name}{_conn_flag(connection)} --force`",
                    ) from None
                if not expired:
                    return cred  # still usable; try again next time
                raise
            self.store.save(prov.name, connection, fresh)
            self.audit.append("refresh", provider=prov.name, connection=connection, ok=True)
            return fresh

    def logout(self, provider: str, connection: str = DEFAULT_CONNECTION) -> bool:
        """Revoke one connection at the provider when it can (best effort), then delete it locally."""
        self.provider(provider)
        info = self.store.info(provider, connection)
        if info is None:
            raise _missing(provider, connection)
        remote = self._revoke_remote(self.connection_provider(provider, info.metadata), connection, strict=False)
        deleted = bool(self.store.delete(provider, connection))
        self.audit.append("logout", provider=provider, connection=connection, revoked_remotely=remote)
        return deleted

    def revoke(self, provider: str) -> dict[str, Any]:
        """Revoke every connection of ``provider`` at the provider, then delete them and the stored client."""
        self.provider(provider)
        conns = self.store.connections(provider)
        if not conns:
            raise _missing(provider, DEFAULT_CONNECTION)
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
        if not (known or removed or client or uninstalled):
            from authsome.errors import ProviderNotFound

            raise ProviderNotFound(f"nothing stored for {provider!r}", "run `authsome list` to see what is stored")
        if connection is not None and not removed:
            raise _missing(provider, connection)
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
            return bool(refresh_flow.revoke(prov, client, cred))
        except AuthsomeError:
            if strict:
                raise
            return False

    def register(self, path: Path | str, force: bool = False) -> Provider:
        """Install a custom provider JSON file (a user file overrides a bundled one)."""
        return self.registry.register(Path(path), force=force)

    # -- audit ---------------------------------------------------------------------------------------------------
    def log(
        self, *, run_id: str | None = None, provider: str | None = None, since: float | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Audit records, oldest first, filtered by run id, provider and time (unix seconds)."""
        return [
            r
            for r in self.audit.records()
            if (run_id is None or r.get("run_id") == run_id)
            and (provider is None or r.get("provider") == provider)
            and (since is None or r.get("ts", 0) >= since)
        ]

    def verify_log(self) -> VerifyResult:
        """Check the audit trail's chain; see :class:`authsome.store.audit.AuditLog`."""
        return self.audit.verify()

    # -- about ---------------------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """Home, profile, key source and counts."""
        config = self.home.read_config()
        conns = self.store.connections()
        return {
            "home": str(self.home.root),
            "profile": self.profile,
            "profiles": self.home.profiles(),
            "key_source": config.get("key_source") or "not chosen yet (chosen at first login)",
            "connections": len(conns),
            "providers_connected": sorted({c.provider for c in conns}),
            "version": _version(),
        }

    # -- run -----------------------------------------------------------------------------------------------------
    def _audit_request(self, record: dict[str, object]) -> None:
        """Called by the proxy (on its audit thread) once per request to a provider host."""
        self.audit.append("request", **record)

    def run(
        self,
        command: Sequence[str],
        *,
        providers: Sequence[str] = (),
        connections: Mapping[str, str] | None = None,
        verbose: bool = False,
        upstream_ca: Path | None = None,
        allow_nested: bool = False,
        confdir: Path | None = None,
        allow: Sequence[str] = (),
        policy_file: Path | None = None,
        upstream_proxy: str | None = None,
    ) -> int:
        """Run ``command`` behind the credential-injecting proxy and return its exit code.

        ``providers`` limits injection (default: every connected provider); ``connections`` maps a provider to a
        non-default connection; ``allow``/``policy_file`` restrict what the child may call (see authsome.policy).
        """
        from authsome.policy import build_policy
        from authsome.proxy.runner import Route, RunConfig, run_command

        connections = dict(connections or {})
        for name in [*providers, *connections]:
            self.provider(name)
        policy = build_policy(allow, policy_file)
        wanted = set(providers) | set(connections)
        chosen: dict[str, ConnectionInfo] = {}
        for info in self.store.connections():
            if info.name == connections.get(info.provider, DEFAULT_CONNECTION) and (
                not wanted or info.provider in wanted
            ):
                chosen[info.provider] = info
        for name in sorted(wanted - set(chosen)):
            raise _missing(name, connections.get(name, DEFAULT_CONNECTION))
        routes = [
            Route(provider=self.connection_provider(p, info.metadata), connection=info.name)
            for p, info in sorted(chosen.items())
        ]
        config = RunConfig(
            command=list(command),
            routes=routes,
            headers_for=self.headers_for,
            verbose=verbose,
            upstream_ca=upstream_ca,
            allow_nested=allow_nested,
            confdir=confdir,
            policy=policy,
            audit=self._audit_request,
            upstream_proxy=upstream_proxy,
            env=self.env,
        )
        return int(run_command(config))


def _needs_refresh(cred: Credential) -> bool:
    if cred.expires_at is None:
        return False
    from authsome.flows.refresh import needs_refresh

    return needs_refresh(cred, time.time())


def _conn_flag(connection: str) -> str:
    return "" if connection == DEFAULT_CONNECTION else f" --connection {connection}"


def _missing(provider: str, connection: str) -> CredentialMissing:
    return CredentialMissing(
        f"no credential stored for {provider}/{connection}", f"run `authsome login {provider}{_conn_flag(connection)}`"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("authsome")
    except PackageNotFoundError:
        return "0+unknown"
