"""The Authsome facade: the one place that wires the store, the providers, the login flows and the proxy.

Everything the CLI does goes through here, so the library offers the same operations::

    from authsome import Authsome
    auth = Authsome()                      # $AUTHSOME_HOME or ~/.authsome, profile "default"
    auth.headers_for("openai")            # {"Authorization": "Bearer sk-…"} (refreshed first if needed)

By concern: :mod:`~authsome.api.core` (the home, the store, the providers, the audit trail),
:mod:`~authsome.api.credentials` (reading, obtaining and removing credentials),
:mod:`~authsome.api.running` (``run``), :mod:`~authsome.api.agents` (the gateway and its agents).
"""

from __future__ import annotations

from authsome.api.agents import AgentsAPI
from authsome.api.core import ProviderStatus
from authsome.api.credentials import REVEALABLE_FIELDS, LoginOptions
from authsome.api.running import RunAPI

__all__ = ["REVEALABLE_FIELDS", "Authsome", "LoginOptions", "ProviderStatus"]


class Authsome(RunAPI, AgentsAPI):
    """Credentials of one profile in one authsome home."""
