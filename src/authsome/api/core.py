"""The core of the :class:`~authsome.api.Authsome` facade: the home, the store, the providers, the audit trail and
what runs and the gateway share. The credentials themselves (:mod:`authsome.api.credentials`) build on it, and
running commands (:mod:`authsome.api.running`) and the gateway's agents (:mod:`authsome.api.agents`) on those."""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from authsome.errors import RefusedInRun, UsageError
from authsome.models import DEFAULT_CONNECTION, DEFAULT_PROFILE, ConnectionInfo
from authsome.paths import Home, check_name
from authsome.store.credentials import CredentialStore, missing
from authsome.store.vault import Vault

if TYPE_CHECKING:
    from authsome.gateway.state import GatewayFiles
    from authsome.providers.registry import Registry
    from authsome.providers.schema import Provider
    from authsome.proxy.report import Audit
    from authsome.proxy.routing import Route
    from authsome.store.audit import AuditLog, VerifyResult
    from authsome.store.keysource import KeySource
    from authsome.store.legacy import ImportReport

ProviderState = Literal["available", "configured", "connected"]


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


class Core:
    """One profile in one authsome home: its store, providers and audit trail (see :class:`~authsome.api.Authsome`)."""

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
            raise missing(provider, connection)
        return info

    def refuse_inside_run(self, what: str) -> None:
        """Raise :class:`RefusedInRun` inside ``authsome run``: a guard-rail for a naive agent (the boundary is the
        sandbox of ``run``, authsome.isolation)."""
        from authsome.proxy.environment import RUN_MARKER

        if self.env.get(RUN_MARKER):
            raise RefusedInRun(
                f"refusing to {what} inside `authsome run`: the child must never hold a real secret",
                "make the request through the proxy (the credential is added on the way); run this outside the run",
            )

    # -- providers -----------------------------------------------------------------------------------------------
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
                raise missing(name, connections.get(name, DEFAULT_CONNECTION))
            if name in self.registry.names():
                routes[name] = Route(self.provider(name), connections.get(name, DEFAULT_CONNECTION))
        return [routes[name] for name in sorted(routes)]

    @property
    def gateway_files(self) -> GatewayFiles:
        from authsome.gateway.state import GatewayFiles

        return GatewayFiles.of(self.home.profile_dir(self.profile))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("authsome")
    except PackageNotFoundError:
        return "0+unknown"
