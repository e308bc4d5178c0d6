"""Keeping OAuth tokens fresh (RFC 6749 section 6) and revoking them (RFC 7009). Never writes the store.

Refresh window (:func:`needs_refresh`): a token is refreshed when it has expired or expires within

    window = min(300 s, max(5 s, lifetime / 10), lifetime / 2)

where ``lifetime`` is the token's ``expires_in`` (kept in ``Credential.metadata["expires_in"]``). A one-hour token is
refreshed in its last 5 minutes, a 5-minute token in its last 30 seconds (not on every use), a 4-second test token in
its last 2. Without a known lifetime the window is 300 s.

:func:`refresh` keeps a refresh token the server rotated, and the old one when it did not rotate. It raises
:class:`TokenRefreshFailed` (a :class:`~authsome.errors.RefreshFailed`) whose ``invalid_grant`` says whether the
server rejected the grant (re-login needed) or the failure may pass (network, server error): the api layer marks the
connection ``invalid`` or leaves it ``expired`` accordingly. authlib and httpx are imported only when a call is made.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from authsome.errors import AuthsomeError, RefreshFailed
from authsome.flows.http import http_errors, oauth_error, safe_text
from authsome.models import DEFAULT_CONNECTION

if TYPE_CHECKING:
    import httpx

    from authsome.models import ClientConfig, Credential
    from authsome.providers.schema import Provider

DEFAULT_WINDOW = 300.0
MIN_WINDOW = 5.0


class TokenRefreshFailed(RefreshFailed):
    """A refresh that did not succeed; ``invalid_grant`` is True when the provider rejected the refresh token."""

    def __init__(
        self, message: str, hint: str | None = None, *, invalid_grant: bool = False, fix_command: str | None = None
    ) -> None:
        super().__init__(message, hint, fix_command=fix_command)
        self.invalid_grant = invalid_grant


def relogin_command(provider: str, connection: str = DEFAULT_CONNECTION) -> str:
    """``authsome login PROVIDER [--connection NAME] --force``: what replaces a token that cannot be refreshed."""
    flag = "" if connection == DEFAULT_CONNECTION else f" --connection {connection}"
    return f"authsome login {provider}{flag} --force"


def refresh_window(credential: Credential) -> float:
    """Seconds before expiry at which ``credential`` should be refreshed (see the module docstring)."""
    lifetime = credential.metadata.get("expires_in")
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        return DEFAULT_WINDOW
    return min(DEFAULT_WINDOW, max(MIN_WINDOW, lifetime / 10), lifetime / 2)


def needs_refresh(credential: Credential, now: float | None = None) -> bool:
    """True for an OAuth credential that has expired or is inside its refresh window; False when it never expires."""
    if credential.kind != "oauth2" or credential.expires_at is None:
        return False
    left = credential.expires_at - (time.time() if now is None else now)
    return left <= refresh_window(credential)


def refresh(
    provider: Provider,
    client: ClientConfig,
    credential: Credential,
    *,
    now: float | None = None,
    connection: str = DEFAULT_CONNECTION,
) -> Credential:
    """Use the refresh token; return the new credential (account label and unchanged fields carried over).

    ``connection`` names the connection being refreshed, for the command a failure tells the user to run.
    """

    from authsome.flows.discovery import resolve_endpoints
    from authsome.flows.http import oauth_client
    from authsome.flows.tokens import credential_from_response

    name = provider.display_name
    command = relogin_command(provider.name, connection)
    relogin = f"run `{command}`"
    if credential.refresh_token is None:
        raise TokenRefreshFailed(
            f"the {name} token expired and there is no refresh token", relogin, fix_command=command
        )
    try:
        token_url = resolve_endpoints(provider, "refresh", client=client).require("token")
    except AuthsomeError as exc:
        raise TokenRefreshFailed(
            f"cannot refresh the {name} token: {exc.message}", exc.hint, fix_command=exc.fix_command
        ) from None
    secrets_in_play = (credential.refresh_token, credential.access_token, client.client_secret)
    with oauth_client(client) as oc:
        try:
            data = oc.refresh_token(token_url, refresh_token=credential.refresh_token.reveal())
        except http_errors() as exc:
            raise TokenRefreshFailed(
                f"could not reach the {name} token endpoint to refresh the token ({type(exc).__name__})",
                "check your network; authsome tries again on the next use",
            ) from None
        except ValueError:
            raise TokenRefreshFailed(
                f"the {name} token endpoint did not answer the refresh with JSON",
                "authsome tries again on the next use",
            ) from None
        except Exception as exc:
            parts = oauth_error(exc)
            if parts is None:
                raise
            error, description = (safe_text(p, secrets_in_play) for p in parts)
            detail = f"{error}" + (f": {description}" if description else "")
            if error == "invalid_grant":
                raise TokenRefreshFailed(
                    f"{name} rejected the refresh token ({detail})", relogin, invalid_grant=True, fix_command=command
                ) from None
            raise TokenRefreshFailed(
                f"{name} refused to refresh the token ({detail})", relogin, fix_command=command
            ) from None
    fresh = credential_from_response(
        dict(data),
        requested_scopes=credential.scopes,
        now=time.time() if now is None else now,
        previous=credential,
        error=TokenRefreshFailed,
    )
    return fresh


def revoke(
    provider: Provider, client: ClientConfig, credential: Credential, *, connection: str = DEFAULT_CONNECTION
) -> bool:
    """Revoke the refresh token, then the access token, at the provider (RFC 7009).

    Returns False when the provider has no revocation endpoint (nothing was sent), True when every token was
    revoked. Raises :class:`AuthsomeError` when the endpoint cannot be reached or refuses.
    """

    from authsome.flows.discovery import discover, resolve_endpoints
    from authsome.flows.http import oauth_client, require_secure_url

    if credential.kind != "oauth2":
        return False
    url = resolve_endpoints(provider, "revoke", client=client).revocation
    if not url and provider.oauth is not None and provider.oauth.issuer:
        try:
            url = discover(provider.oauth.issuer).revocation
        except AuthsomeError:
            url = None
    if not url:
        return False
    require_secure_url(url, "revocation endpoint")
    name = provider.display_name
    flag = "" if connection == DEFAULT_CONNECTION else f" --connection {connection}"
    hint = f"`authsome remove {provider.name}{flag}` deletes the tokens locally without contacting {name}"
    tokens = [(credential.refresh_token, "refresh_token"), (credential.access_token, "access_token")]
    with oauth_client(client) as oc:
        for token, hint_type in tokens:
            if token is None:
                continue
            try:
                response = oc.revoke_token(url, token=token.reveal(), token_type_hint=hint_type)
            except http_errors() as exc:
                raise AuthsomeError(
                    f"could not reach the {name} revocation endpoint ({type(exc).__name__})", hint
                ) from None
            if response.status_code == 200:
                continue
            error = _error_code(response)
            if error == "unsupported_token_type":  # the server cannot revoke this kind; the other may still work
                continue
            raise AuthsomeError(
                f"{name} refused to revoke the {hint_type.replace('_', ' ')} (HTTP {response.status_code}"
                + (f", {error}" if error else "")
                + ")",
                hint,
            )
    return True


def _error_code(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return safe_text(data.get("error", ""), limit=60) if isinstance(data, dict) else ""
