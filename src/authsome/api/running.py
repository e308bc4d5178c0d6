"""``Authsome.run``: a command behind the credential-injecting proxy (its own, or the profile's running gateway)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from authsome.api.credentials import Credentials


class RunAPI(Credentials):
    """Running a command whose requests get the profile's credentials on the way (authsome.proxy)."""

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
        isolate: bool = True,
        use_gateway: bool = True,
    ) -> int:
        """Run ``command`` behind the credential-injecting proxy and return its exit code.

        ``providers`` limits injection (default: every connected provider); ``connections`` maps a provider to a
        non-default connection; ``allow``/``policy_file`` restrict what the child may call (see authsome.policy).
        ``isolate`` (default) hides this home, the CA key and every process outside the child's sandbox from it.
        With ``use_gateway`` (default), a gateway running for this profile serves the child (an agent with the run's
        rights, ended with the run) unless the run asks for what only its own proxy does (an upstream CA, a chained
        proxy the gateway does not use, another CA directory); otherwise the run starts its own proxy.
        """
        from authsome import isolation

        isolation.harden_process()  # before any secret is decrypted in this process
        from authsome.policy import build_policy
        from authsome.proxy.runner import RunConfig, run_command

        connections = dict(connections or {})
        for name in [*providers, *connections]:
            self.provider(name)
        policy = build_policy(allow, policy_file)
        routes = self._routes(providers, connections)
        gateway = None
        if use_gateway and not self.env.get("AUTHSOME_RUN"):  # the runner decides the other fallbacks itself
            from authsome.gateway.client import lease_for_run

            # each provider's connection for the run; a run's agent may pick any other stored one per request
            choices = {r.provider.name: [r.connection] for r in routes}
            gateway = lease_for_run(self.gateway_files, [r.provider.name for r in routes], choices, policy)
        config = RunConfig(
            command=list(command),
            routes=routes,
            headers_for=self._headers_for,
            verbose=verbose,
            upstream_ca=upstream_ca,
            allow_nested=allow_nested,
            confdir=confdir,
            policy=policy,
            audit=self._audit_sink(),
            upstream_proxy=upstream_proxy,
            env=self.env,
            isolate=isolate,
            hide=[self.home.root],
            gateway=gateway,
        )
        try:
            return int(run_command(config))
        finally:
            self.audit.flush()  # every request's record is on disk before `run` returns
