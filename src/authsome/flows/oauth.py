"""The OAuth login entry point for the api layer: pick the flow, the endpoints and the client, run it, check the result.

    cred, client = oauth.login(provider, client=stored_client, ui=ui, env=os.environ)

Returns the credential and the client it was obtained with (new, re-used, or dynamically registered, with any
discovered endpoints in its metadata); the caller stores both. Nothing here writes the store.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from authsome.errors import UsageError
from authsome.flows import dcr, device, pkce
from authsome.flows.client import resolve_client
from authsome.flows.discovery import Endpoints, resolve_endpoints
from authsome.flows.http import plain_client
from authsome.flows.pkce import DEFAULT_REDIRECT_PORT, LOGIN_TIMEOUT
from authsome.flows.tokens import (
    LABEL_CLAIMS,
    account_label,
    credential_from_response,
    id_token_claims,
    label_from_claims,
    missing_scopes,
    parse_scopes,
    userinfo,
    with_account,
)

if TYPE_CHECKING:
    import httpx

    from authsome.flows.ui import FlowUI
    from authsome.models import ClientConfig, Credential
    from authsome.providers.schema import Provider

FLOWS = ("pkce", "device_code", "dcr_pkce")
__all__ = ["DEFAULT_REDIRECT_PORT", "FLOWS", "login"]


def login(
    provider: Provider,
    *,
    client: ClientConfig | None,
    ui: FlowUI,
    env: Mapping[str, str] | None = None,
    scopes: Sequence[str] | None = None,
    flow: str | None = None,
    client_id: str | None = None,
    no_browser: bool = False,
    secret_form: bool | None = None,
    redirect_port: int | None = None,
    timeout: float = LOGIN_TIMEOUT,
) -> tuple[Credential, ClientConfig]:
    """Log in to an OAuth provider.

    ``client`` is the stored client (None on first login or with ``--reset``); ``scopes`` None means the provider's
    default scopes; ``flow`` overrides the provider's flow; ``redirect_port`` None means 7999 (0 = any free port).
    ``secret_form`` asks for a client secret in a local browser form: True when asked for, None only when a person is
    at a terminal (see :func:`authsome.flows.client.resolve_client`); ``no_browser`` turns it off.
    """
    if provider.oauth is None:
        raise UsageError(f"{provider.display_name} does not use OAuth", "log in with an API key instead")
    chosen = flow or provider.flow
    if chosen not in FLOWS:
        raise UsageError(f"unknown OAuth flow {chosen!r}", f"choose one of {', '.join(FLOWS)}")
    if redirect_port is not None and not 0 <= redirect_port <= 65535:
        raise UsageError(f"redirect port {redirect_port} is out of range", "use 0 (any free port) or 1-65535")
    wanted = _scopes(scopes, provider.oauth.scopes)
    environ: Mapping[str, str] = env if env is not None else {}
    form = False if no_browser else secret_form
    with plain_client() as http:
        endpoints = resolve_endpoints(provider, chosen, client=client, http=http)
        common: dict[str, Any] = {"display_name": provider.display_name, "scopes": wanted, "ui": ui}
        if chosen == "device_code":
            used = resolve_client(provider, stored=client, client_id=client_id, env=environ, ui=ui, allow_browser=form)
            assert used is not None
            json_poll = provider.oauth.device_token_request == "json"  # Postiz: a JSON body, not the RFC 8628 form
            token = device.authorize(endpoints, client=used, no_browser=no_browser, json_poll=json_poll, **common)
        else:

            def get_client(redirect_uri: str) -> ClientConfig:
                return _client_for(
                    provider, chosen, endpoints, client, client_id, environ, ui, form, redirect_uri, wanted, http
                )

            token, used = pkce.authorize(
                endpoints,
                get_client=get_client,
                no_browser=no_browser,
                redirect_port=redirect_port,
                timeout=timeout,
                extra_params=dict(provider.oauth.authorization_params),
                **common,
            )
        cred = credential_from_response(token, requested_scopes=wanted, now=time.time(), metadata={"flow": chosen})
        missing = missing_scopes(wanted, cred.scopes)
        if missing:
            ui.warn(f"{provider.display_name} did not grant every scope asked for (missing: {', '.join(missing)})")
        cred = with_account(cred, _account(cred, endpoints, http))
    return cred, replace(used, metadata={**endpoints.to_metadata(), **used.metadata})


def _scopes(requested: Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    if requested is None:
        return tuple(default)
    scopes = parse_scopes(list(requested))
    for scope in scopes:
        if not scope.isprintable() or '"' in scope or "\\" in scope:
            raise UsageError(f"invalid scope {scope!r}", "scopes are printable words without quotes or spaces")
    return scopes


def _client_for(
    provider: Provider,
    flow: str,
    endpoints: Endpoints,
    stored: ClientConfig | None,
    client_id: str | None,
    env: Mapping[str, str],
    ui: FlowUI,
    form: bool | None,
    redirect_uri: str,
    scopes: Sequence[str],
    http: httpx.Client,
) -> ClientConfig:
    if flow != "dcr_pkce":
        used = resolve_client(provider, stored=stored, client_id=client_id, env=env, ui=ui, allow_browser=form)
        assert used is not None
        return used
    reuse = stored if dcr.reusable(stored, redirect_uri) else None
    known = resolve_client(
        provider, stored=reuse, client_id=client_id, env=env, ui=ui, allow_browser=form, required=False
    )
    if known is not None:
        return known
    ui.info(f"Registering authsome as an OAuth client with {provider.display_name} (dynamic client registration)")
    return dcr.register(endpoints, redirect_uri=redirect_uri, scopes=scopes, http=http)


def _account(cred: Credential, endpoints: Endpoints, http: httpx.Client) -> str | None:
    """The account label: a human-readable ID-token claim, else the userinfo endpoint, else ``sub``."""
    if label_from_claims(id_token_claims(cred.id_token), LABEL_CLAIMS) is None and endpoints.userinfo:
        assert cred.access_token is not None
        return account_label(cred, userinfo_claims=userinfo(http, endpoints.require("userinfo"), cred.access_token))
    return account_label(cred)
