"""The gateway's agents and the gateway itself, served in this process (authsome.gateway)."""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from authsome.api.credentials import Credentials, ExportFormat
from authsome.paths import check_name
from authsome.secret import Secret

if TYPE_CHECKING:
    from authsome.gateway.service import GatewayOptions
    from authsome.store.agents import Agent, AgentStore


class AgentsAPI(Credentials):
    """Agents of the profile's gateway (each a token and its own rights), and serving the gateway."""

    @cached_property
    def agents(self) -> AgentStore:
        """The agents of this profile's gateway (names, token hashes, rights)."""
        from authsome.store.agents import AgentStore

        return AgentStore(self.store.vault)

    def create_agent(
        self,
        name: str,
        *,
        providers: Sequence[str] = (),
        connections: Sequence[tuple[str, str]] = (),
        allow: Sequence[str] = (),
        policy_file: Path | None = None,
        expires_in: float | None = None,
        replace: bool = False,
    ) -> tuple[Agent, Secret]:
        """A new gateway agent and its token, shown this once (the store keeps only its SHA-256).

        ``providers`` (none: every connected one) and ``connections`` (``(provider, name)`` pairs; the first of a
        provider is the one its requests get, the others may be picked with ``X-Authsome-Connection``) are what it
        may use; ``allow``/``policy_file`` restrict its requests as ``run --allow/--policy`` do.
        """
        self.refuse_inside_run("create an agent")
        from authsome.policy import build_policy
        from authsome.store.agents import Rights

        named: dict[str, builtins.list[str]] = {}
        for provider, connection in connections:
            named.setdefault(provider, []).append(check_name("connection", connection))
        for provider in [*providers, *named]:
            self.provider(provider)
        policy = build_policy(allow, policy_file)
        rights = Rights(
            providers=tuple(dict.fromkeys(providers)),
            connections={p: tuple(dict.fromkeys(n)) for p, n in named.items()},
            allow=tuple(str(rule) for rule in policy.rules),
            policy_source=policy.source if policy.rules else None,
        )
        agent, token = self.agents.create(name, rights, expires_in=expires_in, replace=replace)
        self.audit.append("agent", action="create", agent=name, expires_at=agent.expires_at, **rights.to_dict())
        return agent, token

    def rotate_agent(self, name: str) -> tuple[Agent, Secret]:
        """A new token for an agent (shown this once); the old one stops working within a second."""
        self.refuse_inside_run("rotate an agent's token")
        agent, token = self.agents.rotate(name)
        self.audit.append("agent", action="rotate", agent=name)
        return agent, token

    def revoke_agent(self, name: str) -> Agent:
        """Revoke an agent: a running gateway refuses it from its next request (within a second)."""
        agent = self.agents.revoke(name)
        self.audit.append("agent", action="revoke", agent=name)
        return agent

    def agent_env(
        self,
        name: str,
        *,
        fmt: ExportFormat = "env",
        token: str | None = None,
        address: str | None = None,
        confdir: Path | None = None,
        ca_path: str | None = None,
    ) -> str:
        """What agent ``name`` needs in its environment to use the gateway (see authsome.gateway.agent_env).

        ``token``, when given, must be the agent's (it is checked against the stored hash); ``address`` defaults to
        the running gateway's, else the default listen address; ``ca_path`` is where the agent finds the CA bundle
        (default: the bundle's path here).
        """
        from authsome.errors import AuthenticationFailed
        from authsome.gateway import address as gateway_address
        from authsome.gateway import agent_env, state
        from authsome.proxy import ca

        agent = self.agents.require(name)
        if token is not None and not agent.verify(token):
            raise AuthenticationFailed(
                f"that is not agent {name}'s token", "pass the token `agent create` or `agent rotate` printed last"
            )
        files = self.gateway_files.ensure()
        running = state.read_state(files) or {}
        where = address or running.get("listen") or gateway_address.show(gateway_address.parse_listen(""))
        ca_pem = Path(running["ca_cert"]).read_bytes() if running.get("ca_cert") else ca.ensure_ca(confdir)
        bundle = state.write_bundle(files.bundle, ca_pem, self.env)
        defaults = {p: names[0] for p, names in agent.rights.connections.items() if names}
        routes = self._routes(agent.rights.providers, defaults, missing_ok=True)
        providers = [r.provider for r in routes]
        env = agent_env.agent_env(name, where, token, Path(ca_path) if ca_path else bundle, providers)
        return agent_env.render(env, fmt, ca_pem=ca_pem, name=name, address=where)

    def serve_gateway(self, options: GatewayOptions, stop: threading.Event | None = None) -> int:
        """Run the gateway in this process until SIGTERM/SIGINT, or until ``stop`` is set (a gateway served on a
        thread of a larger program); see authsome.gateway.service. Exit code 0."""
        self.refuse_inside_run("serve the gateway")
        from authsome import isolation

        isolation.harden_process()  # before any secret is decrypted in this process
        from authsome.gateway.service import GatewayConfig, serve
        from authsome.store.backend import failure_teller

        self.store.vault.master_key()  # a missing key or passphrase stops it here, not at an agent's first request
        agents = self.agents
        config = GatewayConfig(
            options,
            lookup=agents.get,
            routes_for=lambda providers, connections: self._routes(providers, connections, missing_ok=True),
            headers_for=self._headers_for,
            audit=self._audit_sink(),
            env=self.env,
            files=self.gateway_files.ensure(),
            profile=self.profile,
            watch=self._watch_store if self.store_url else None,
            tell_failure=failure_teller(self.store_url, self.profile),
            flush_audit=self.audit.flush,
        )
        if stop is not None:
            config.stop = stop
        try:
            return serve(config)
        finally:
            self.audit.flush()

    @contextlib.contextmanager
    def _watch_store(self, changed: Callable[[str, str], None]) -> Iterator[None]:
        """While a gateway serves a shared store: a custom provider registered or removed on another replica is
        copied here and the registry read again; every change then goes on to ``changed`` (see store.backend.watch)."""
        from authsome.providers.registry import Registry
        from authsome.store.backend import providers_dir, watch

        def on_change(what: str, name: str) -> None:
            if what in ("provider", "all"):
                self.__dict__["registry"] = Registry(providers_dir(self.home, self.store_url))
            changed(what, name)

        with watch(self.store_url, self.profile, on_change):
            yield
