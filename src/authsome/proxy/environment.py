"""What the child of ``authsome run`` sees: proxy variables, placeholders and CA bundles. No mitmproxy here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from authsome.providers.schema import PLACEHOLDER, Provider

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")
BUNDLE_VARS = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
)
NODE_CA_VAR = "NODE_EXTRA_CA_CERTS"
LOOPBACK = ("localhost", "127.0.0.1", "::1")
RUN_MARKER = "AUTHSOME_RUN"
TEST_RESOLVE_VAR = "AUTHSOME_TEST_RESOLVE"
# Variables authsome reads that must never reach the child: the store passphrase is a secret.
PRIVATE_VARS = ("AUTHSOME_PASSPHRASE", TEST_RESOLVE_VAR)


def proxy_url(port: int, token: str, user: str = "authsome") -> str:
    """The URL the child's HTTP clients use: per-run credentials, loopback only."""
    return f"http://{user}:{token}@127.0.0.1:{port}"


def no_proxy(parent: Mapping[str, str]) -> str:
    """The user's ``NO_PROXY``/``no_proxy`` entries (both, deduplicated), extended with loopback."""
    entries: list[str] = []
    for name in NO_PROXY_VARS:
        for item in parent.get(name, "").split(","):
            item = item.strip()
            if item and item not in entries:
                entries.append(item)
    entries.extend(x for x in LOOPBACK if x not in entries)
    return ",".join(entries)


def placeholders(providers: Iterable[Provider]) -> dict[str, str]:
    """``PLACEHOLDER`` in every export variable (and API-key variable) of the providers in play."""
    env: dict[str, str] = {}
    for provider in providers:
        env.update(provider.placeholder_env())
        if provider.api_key is not None and provider.api_key.env_var:
            env[provider.api_key.env_var] = PLACEHOLDER
    return env


def child_env(
    parent: Mapping[str, str],
    *,
    url: str,
    bundle: Path,
    node_bundle: Path,
    providers: Iterable[Provider],
) -> dict[str, str]:
    """The parent's environment minus authsome's private variables, plus the proxy settings.

    ``bundle`` = system CAs + the user's CAs + the proxy CA (for every variable in :data:`BUNDLE_VARS`);
    ``node_bundle`` = the user's ``NODE_EXTRA_CA_CERTS`` + the proxy CA (Node adds it to its built-in roots).
    """
    env = {k: v for k, v in parent.items() if k not in PRIVATE_VARS}
    for name in PROXY_VARS:
        env[name] = url
    env["NO_PROXY"] = env["no_proxy"] = no_proxy(parent)
    for name in BUNDLE_VARS:
        env[name] = str(bundle)
    env[NODE_CA_VAR] = str(node_bundle)
    env["NODE_USE_ENV_PROXY"] = "1"
    env.update(placeholders(providers))
    env[RUN_MARKER] = "1"
    return env
