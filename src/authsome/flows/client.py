"""Which OAuth client a login uses: its id and (for confidential clients) its secret.

``client_id``: ``--client-id`` → the provider's ``client.client_id_env`` → the stored client → a prompt.
``client_secret``: the stored one (same client id) → ``client.client_secret_env`` → a masked prompt (empty answer =
public client) → the local browser form when the provider says a secret is needed and it was asked for (``--browser``)
or a person is at a terminal that cannot be prompted; otherwise a public client. Never a command-line argument.
Bundled providers ship no client secrets.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from authsome.errors import UsageError
from authsome.flows.secret_form import ask_in_browser
from authsome.flows.ui import at_terminal
from authsome.models import ClientConfig
from authsome.secret import Secret

if TYPE_CHECKING:
    from authsome.flows.ui import FlowUI
    from authsome.providers.schema import Provider

_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII, no spaces (RFC 6749 appendix A.1 VSCHAR)
_BAD_SECRET = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_client_id(value: str, source: str) -> str:
    client_id = value.strip()
    if not _CLIENT_ID.fullmatch(client_id):
        raise UsageError(
            f"the OAuth client id from {source} is empty or has spaces or control characters",
            "copy the client id from the provider's app settings",
        )
    return client_id


def check_client_secret(value: str, source: str) -> Secret:
    secret = value.strip()
    if not secret or len(secret) > 4096 or _BAD_SECRET.search(secret):
        raise UsageError(
            f"the OAuth client secret from {source} is empty, too long or has control characters",
            "copy the client secret from the provider's app settings",
        )
    return Secret(secret)


def resolve_client(
    provider: Provider,
    *,
    stored: ClientConfig | None,
    client_id: str | None,
    env: Mapping[str, str],
    ui: FlowUI,
    allow_browser: bool | None = None,
    required: bool = True,
) -> ClientConfig | None:
    """The client to log in with; None only when ``required`` is False and nothing is known (dynamic registration)."""
    spec = provider.client
    chosen: str | None = None
    if client_id:
        chosen = check_client_id(client_id, "--client-id")
    elif spec.client_id_env and env.get(spec.client_id_env, "").strip():
        chosen = check_client_id(env[spec.client_id_env], f"${spec.client_id_env}")
    elif stored is not None:
        return stored
    elif ui.is_interactive and required:
        chosen = check_client_id(ui.prompt(f"{provider.display_name} OAuth client id"), "the prompt")
    if chosen is None:
        if not required:
            return None
        raise UsageError(
            f"no OAuth client id for {provider.display_name}",
            "pass --client-id ID"
            + (f" or set {spec.client_id_env}" if spec.client_id_env else "")
            + " (create an OAuth app in the provider's developer settings)",
        )
    if stored is not None and stored.client_id == chosen:
        return stored
    return ClientConfig(client_id=chosen, client_secret=_secret(provider, env, ui, allow_browser))


def _secret(provider: Provider, env: Mapping[str, str], ui: FlowUI, allow_browser: bool | None) -> Secret | None:
    name = provider.client.client_secret_env
    if name and env.get(name, "").strip():
        return check_client_secret(env[name], f"${name}")
    what = f"{provider.display_name} OAuth client secret"
    if ui.is_interactive and not allow_browser:
        answer = ui.prompt_secret(f"{what} (press Enter for a public client)")
        return check_client_secret(answer, "the prompt") if answer.strip() else None
    if name and (allow_browser or (allow_browser is None and at_terminal(sys.stdin))):  # the provider wants a secret
        return ask_in_browser(
            ui,
            what=what,
            validate=lambda value: check_client_secret(value, "the browser form"),
            hint=f"set {name} and run the login again",
        )
    return None
