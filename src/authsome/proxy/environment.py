"""What the child of ``authsome run`` sees: proxy variables, placeholders and CA bundles. No mitmproxy here."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from authsome.providers.schema import PLACEHOLDER, Provider

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")
# Variables that name one CA file, each set to the run's bundle (whether or not the parent had it).
BUNDLE_VARS = (
    "SSL_CERT_FILE",  # OpenSSL's default file: Python's ssl, httpx, Ruby, Go, uv, …
    "CURL_CA_BUNDLE",  # curl
    "GIT_SSL_CAINFO",  # git
    "AWS_CA_BUNDLE",  # AWS CLI and SDKs
    "PIP_CERT",  # pip
    "CARGO_HTTP_CAINFO",  # cargo
    "DENO_CERT",  # Deno
    "HTTPLIB2_CA_CERTS",  # httplib2 (google-api-python-client)
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",  # gRPC
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",  # gcloud
    "NIX_SSL_CERT_FILE",  # programs built by Nix
    "BUNDLE_SSL_CA_CERT",  # Ruby's bundler
    "WEBSOCKET_CLIENT_CA_BUNDLE",  # websocket-client
    "COMPOSER_CAFILE",  # PHP's composer
    "HEX_CACERTS_PATH",  # Elixir's hex
)
# Set only when the parent has them: npm's cafile replaces Node's own roots, which are cheaper to keep.
INHERITED_BUNDLE_VARS = ("NPM_CONFIG_CAFILE", "npm_config_cafile")
# Variables that take a hashed directory (OpenSSL's c_rehash layout): clients read only the roots they need.
REQUESTS_CA_VAR = "REQUESTS_CA_BUNDLE"  # requests (a file or a directory)
CERT_DIR_VAR = "SSL_CERT_DIR"  # OpenSSL's default directory, Go; a ':'-separated list
NODE_CA_VAR = "NODE_EXTRA_CA_CERTS"
LOOPBACK = ("localhost", "127.0.0.1", "::1")
RUN_MARKER = "AUTHSOME_RUN"
TEST_RESOLVE_VAR = "AUTHSOME_TEST_RESOLVE"
# Variables authsome reads that must never reach the child: the store passphrase, a master key given in the
# environment and a database URL (it may carry a password) are secrets.
PRIVATE_VARS = ("AUTHSOME_PASSPHRASE", "AUTHSOME_MASTER_KEY", "AUTHSOME_STORE_URL", TEST_RESOLVE_VAR)


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
    cert_dir: Path | None = None,
) -> dict[str, str]:
    """The parent's environment minus authsome's private variables, plus the proxy settings.

    ``bundle`` = system CAs + the user's CAs + the proxy CA (for every variable in :data:`BUNDLE_VARS`);
    ``cert_dir`` = the same certificates as a hashed directory (``REQUESTS_CA_BUNDLE``, and first in
    ``SSL_CERT_DIR``, before the parent's own directories); ``node_bundle`` = the proxy CA and the user's CAs that Node
    lacks (Node adds them to its built-in roots).
    """
    env = {k: v for k, v in parent.items() if k not in PRIVATE_VARS}
    for name in PROXY_VARS:
        env[name] = url
    env["NO_PROXY"] = env["no_proxy"] = no_proxy(parent)
    for name in BUNDLE_VARS:
        env[name] = str(bundle)
    for name in INHERITED_BUNDLE_VARS:
        if name in parent:
            env[name] = str(bundle)
    env[REQUESTS_CA_VAR] = str(cert_dir or bundle)
    if cert_dir is not None:
        env[CERT_DIR_VAR] = os.pathsep.join(
            [str(cert_dir), *filter(None, parent.get(CERT_DIR_VAR, "").split(os.pathsep))]
        )
    env[NODE_CA_VAR] = str(node_bundle)
    env["NODE_USE_ENV_PROXY"] = "1"
    env.update(placeholders(providers))
    env[RUN_MARKER] = "1"
    return env
