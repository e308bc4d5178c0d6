"""``authsome gateway``: one long-running credential-injecting proxy for many agents, each with its own rights.

- :mod:`~authsome.gateway.principals`: agents at the door (token check, cached ≤ 1 s, rate limit, rights);
- :mod:`~authsome.gateway.service`: ``serve`` (the proxy core of ``run``, its listener, graceful shutdown);
- :mod:`~authsome.gateway.events`: one log line per decision (text or JSON);
- :mod:`~authsome.gateway.state`: the per-profile lock, pid and state files, the agents' CA bundle;
- :mod:`~authsome.gateway.control`: ``start``/``stop``/``status`` of a background gateway;
- :mod:`~authsome.gateway.agent_env`: what an agent needs in its environment.

Importing this package loads nothing heavy: mitmproxy is loaded by ``serve``.
"""
