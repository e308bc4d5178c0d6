"""``authsome agent env``: the environment an agent (a container, a sandbox, another host) needs to use the gateway.

Proxy variables (``http://NAME:TOKEN@HOST:PORT``), ``NO_PROXY`` for loopback, the CA bundle in every variable common
clients read, and the placeholder keys of the providers the agent may use. The token is known only when it is given
(it is shown once, by ``agent create`` or ``agent rotate``): without it the URL holds :data:`TOKEN_PLACEHOLDER`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from authsome.providers.schema import Provider
from authsome.proxy import environment

EnvFormat = Literal["env", "shell", "json"]
TOKEN_PLACEHOLDER = "<token>"


def agent_env(
    name: str, address: str, token: str | None, bundle: Path, providers: Iterable[Provider]
) -> dict[str, str]:
    """The variables, in a stable order."""
    url = f"http://{name}:{token or TOKEN_PLACEHOLDER}@{address}"
    env = dict.fromkeys(environment.PROXY_VARS, url)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(environment.LOOPBACK)
    for var in (*environment.BUNDLE_VARS, environment.REQUESTS_CA_VAR, environment.NODE_CA_VAR):
        env[var] = str(bundle)
    env["NODE_USE_ENV_PROXY"] = "1"
    env.update(sorted(environment.placeholders(providers).items()))
    return env


def render(env: Mapping[str, str], fmt: EnvFormat, *, ca_pem: bytes, name: str, address: str) -> str:
    """``env``: ``KEY=VALUE`` lines (``docker run --env-file``); ``shell``: ``export`` lines (safe to ``eval``);
    ``json``: ``{"agent", "gateway", "env", "ca_pem"}``, the CA certificate itself for whoever writes the file."""
    if fmt == "json":
        data = {"agent": name, "gateway": address, "env": dict(env), "ca_pem": ca_pem.decode()}
        return json.dumps(data, indent=2)
    if fmt == "shell":
        return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())
    return "\n".join(f"{key}={value}" for key, value in env.items())
