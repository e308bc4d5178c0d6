"""The core of the :class:`~authsome.api.Authsome` facade: the home, the store, the providers, reading and writing
credentials, the audit trail. Running commands (:mod:`authsome.api.running`) and the gateway's agents
(:mod:`authsome.api.agents`) build on it."""

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

from authsome.errors import AuthsomeError, CredentialMissing, RefreshFailed, RefusedInRun, UsageError
from authsome.models import DEFAULT_CONNECTION, DEFAULT_PROFILE, ClientConfig, ConnectionInfo, Credential
from authsome.paths import Home, check_name
from authsome.secret import Secret
from authsome.store.credentials import CredentialStore
from authsome.store.vault import Vault

if TYPE_CHECKING:
    from authsome.flows.ui import FlowUI
    from authsome.gateway.state import GatewayFiles
    from authsome.providers.registry import Registry
    from authsome.providers.schema import Provider
    from authsome.proxy.report import Audit
    from authsome.proxy.routing import Route
    from authsome.store.audit import AuditLog, VerifyResult
    from authsome.store.keysource import KeySource
    from authsome.store.legacy import ImportReport

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
    browser: bool = False  # ask for a key or client secret in a local browser form, even without a terminal
    redirect_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Core:
    """Credentials of one profile in one authsome home (see :class:`~authsome.api.Authsome`)."""

    def __init__(
        self,
        home: Path | str | None = None,
        profile: str = DEFAULT_PROFILE,
        env: Mapping[str, str] | None = None,
        *,
        read_only: bool = False,
        store_url: str | None = None,
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self._home_root = Path(home) if home is not None else None
        # A shared PostgreSQL store (docs/store.md); None: this home's SQLite files.
        self.store_url = store_url or self.env.get("AUTHSOME_STORE_URL") or None
        self.profile = check_name("profile", profile)
        self.read_only = read_only  # inspect without creating or importing anything (``doctor``)
        self.import_reports: list[ImportReport] = []
        self._import_checked = False

    @cached_property
    def home(self) -> Home:
        """The home, created on first use (not at construction: a refusal inside a run comes first)."""
        return Home.locate(self._home_root) if self.read_only else Home.resolve(self._home_root)

    def import_authsome_home(self) -> list[ImportReport]:
        """Import, once and in place, a home the authsome package (0.2.x, 0.5-0.7.x) wrote here (docs/store.md).

        Runs before the store or the providers are first used; empty when there was nothing (left) to import. A
        failure (its master key not available…) is in a report's ``error`` and does not stop this command.
        """
        if self.read_only or self._import_checked:
            return self.import_reports
        self._import_checked = True
        from authsome.store import legacy

        self.import_reports = legacy.import_home(self.home, self.env, self._profile_store)
        imported = [name for report in self.import_reports for name in report.providers]
        if imported:  # copied as they were: say which do not validate here
            from authsome.providers.registry import Registry

            problems = {path.stem: why for path, why in Registry(self.home.providers_dir).problems()}
            for report in self.import_reports:
                report.unusable = {name: problems[name] for name in report.providers if name in problems}
        return self.import_reports

    def _profile_store(self, profile: str) -> CredentialStore:
        return CredentialStore(Vault(self.home.profile_dir(profile), profile, lambda: self.key_source))

    # -- wiring --------------------------------------------------------------------------------------------------
    @cached_property
    def registry(self) -> Registry:
        from authsome.providers.registry import Registry
        from authsome.store.backend import providers_dir

        self.import_authsome_home()
        return Registry(providers_dir(self.home, self.store_url, refresh=not self.read_only))

    @cached_property
    def key_source(self) -> KeySource:
        from authsome.store import keysource

        return keysource.select(self.home, self.env)

    @cached_property
    def store(self) -> CredentialStore:
        from authsome.store.backend import open_store

        self.import_authsome_home()
        return CredentialStore(open_store(self.home, self.profile, lambda: self.key_source, self.store_url))

    @cached_property
    def audit(self) -> AuditLog:
        from authsome.store.backend import open_audit

        return open_audit(self.home, self.store.vault)

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

    def refuse_inside_run(self, what: str) -> None:
        """Raise :class:`RefusedInRun` inside ``authsome run``: a guard-rail for a naive agent (the boundary is the
        sandbox of ``run``, authsome.isolation)."""
        from authsome.proxy.environment import RUN_MARKER

        if self.env.get(RUN_MARKER):
            raise RefusedInRun(
                f"refusing to {what} inside `authsome run`: the child must never hold a real secret",
                "make the request through the proxy (the credential is added on the way); run this outside the run",
            )

    def export(
        self, provider: str, connection: str = DEFAULT_CONNECTION, fmt: ExportFormat = "env", prefix: str = ""
    ) -> str:
        """The provider's export variables as ``env`` lines, ``shell`` exports (safe to eval) or ``json``."""
        import json

        self.refuse_inside_run("export a secret")
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
            raise _missing(provider, connection)
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

    def register(self, path: Path | str, force: bool = False) -> Provider:
        """Install a custom provider JSON file (a user file overrides a bundled one)."""
        from authsome.store.backend import provider_saved

        prov = self.registry.register(Path(path), force=force)
        if prov.path is not None:
            provider_saved(self.store_url, prov.name, prov.path)  # a shared store: every replica gets it
        return prov

    # -- audit ---------------------------------------------------------------------------------------------------
    def log(
        self,
        *,
        run_id: str | None = None,
        provider: str | None = None,
        since: float | None = None,
        agent: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Audit records, oldest first, filtered by run id, provider, gateway agent and time (unix seconds)."""
        return [
            r
            for r in self.audit.records()
            if (run_id is None or r.get("run_id") == run_id)
            and (provider is None or r.get("provider") == provider)
            and (agent is None or r.get("agent") == agent)
            and (since is None or r.get("ts", 0) >= since)
        ]

    def verify_log(self) -> VerifyResult:
        """Check the audit trail's chain; see :class:`authsome.store.audit.AuditLog`."""
        return self.audit.verify()

    # -- the store ---------------------------------------------------------------------------------------------
    def migrate_store(self, source: str | None = None, destination: str | None = None) -> dict[str, Any]:
        """Copy the whole store (every profile's records and audit trail, the custom providers) between this home's
        files and a PostgreSQL database, either way, and verify the copy; see authsome.store.pg.transfer.

        ``source``/``destination``: ``home``, ``sqlite:PATH`` or ``postgresql://…``; by default from this home to the
        configured store (``--store``/``AUTHSOME_STORE_URL``), or from it when ``destination`` is a home.
        """
        self.refuse_inside_run("migrate the store")
        from authsome.store.pg import transfer

        configured = transfer.Side(self.home, self.store_url) if self.store_url else None
        src = transfer.parse_side(source, self.home) if source else None
        dst = transfer.parse_side(destination, self.home) if destination else None
        if dst is None:
            dst = configured if src is None or src.url is None else transfer.Side(self.home)
        if src is None:
            src = configured if dst is not None and dst.url is None else transfer.Side(self.home)
        if src is None or dst is None:
            raise UsageError(
                "no database to migrate to or from", "pass --to postgresql://… (or set AUTHSOME_STORE_URL)"
            )
        return transfer.migrate(src, dst, lambda: self.key_source).to_dict()

    # -- about ---------------------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """Home, profile, key source and counts."""
        from authsome.store.backend import profiles as store_profiles

        config = self.home.read_config()
        conns = self.store.connections()
        return {
            "home": str(self.home.root),
            "profile": self.profile,
            "profiles": store_profiles(self.home, self.store_url),
            "store": self.store.vault.describe(),
            "key_source": config.get("key_source") or "not chosen yet (chosen at first login)",
            "connections": len(conns),
            "providers_connected": sorted({c.provider for c in conns}),
            "version": _version(),
        }

    # -- wiring shared by runs and the gateway ------------------------------------------------------------------
    def _audit_request(self, record: dict[str, object]) -> None:
        """Called by the proxy (on its audit thread) once per request to a provider host: queued, written in batches."""
        self.audit.submit("request", **record)

    def _audit_sink(self) -> Audit:
        """Where the proxy sends its request records: queued (this machine's trail), or, for a trail shared by
        gateway replicas, committed before each answer (a replica killed after answering loses none)."""
        if not self.audit.commits_before_answer:
            return self._audit_request
        from authsome.proxy.report import DurableAudit

        return DurableAudit(lambda event, record: self.audit.commit(event, **record))

    def _routes(
        self, providers: Sequence[str], connections: Mapping[str, str], *, missing_ok: bool = False
    ) -> builtins.list[Route]:
        """Proxy routes for ``providers`` (none: every connected one), each with its connection from ``connections``
        (else ``default``). A provider named without that connection stored raises :class:`CredentialMissing`; with
        ``missing_ok`` (the gateway) it is routed all the same, so that its requests get a 401 naming the login
        command, and a provider that no longer exists is left out."""
        from authsome.proxy.routing import Route

        wanted = set(providers) | set(connections)
        chosen: dict[str, ConnectionInfo] = {}
        for info in self.store.connections():
            if info.name == connections.get(info.provider, DEFAULT_CONNECTION) and (
                not wanted or info.provider in wanted
            ):
                chosen[info.provider] = info
        routes = {p: Route(self.connection_provider(p, info.metadata), info.name) for p, info in chosen.items()}
        for name in sorted(wanted - set(chosen)):
            if not missing_ok:
                raise _missing(name, connections.get(name, DEFAULT_CONNECTION))
            if name in self.registry.names():
                routes[name] = Route(self.provider(name), connections.get(name, DEFAULT_CONNECTION))
        return [routes[name] for name in sorted(routes)]

    @property
    def gateway_files(self) -> GatewayFiles:
        from authsome.gateway.state import GatewayFiles

        return GatewayFiles.of(self.home.profile_dir(self.profile))


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


def _missing(provider: str, connection: str) -> CredentialMissing:
    from authsome.store.credentials import missing

    return missing(provider, connection)


def _nothing_stored(provider: str) -> CredentialMissing:
    return CredentialMissing(f"no credential stored for {provider}", "run `authsome list` to see what is stored")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("authsome")
    except PackageNotFoundError:
        return "0+unknown"
