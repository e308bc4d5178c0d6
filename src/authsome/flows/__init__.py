"""Login flows: each returns credentials (and, for OAuth, the client it used) and never writes the store.

Modules: ``ui`` (what a flow needs from the CLI), ``loopback`` (one-shot 127.0.0.1 server), ``api_key``, and the
OAuth flows ``oauth`` (entry point), ``pkce``, ``device``, ``dcr``, ``tokens`` and ``refresh``. Importing this package
imports nothing else: authlib and httpx are loaded only by the OAuth modules, when a flow runs.
"""

from __future__ import annotations
