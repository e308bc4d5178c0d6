"""The ``export`` block: the variables ``authsome export`` fills and ``authsome run`` sets to a placeholder.

Three spellings are read, and may be mixed::

    {"env": {"OPENAI_API_KEY": "api_key"}}      this project: variable -> credential
    {"env": {"api_key": "OPENAI_API_KEY"}}      authsome 0.2.x: credential -> variable
    {"OPENAI_API_KEY": "API_TOKEN"}             authsome 0.7.x: variable -> source (API_TOKEN, ACCESS_TOKEN,
                                                BASE_URL, API_URL; any case)

The direction of an ``env`` entry is never ambiguous: credential names are lowercase words (``api_key``,
``access_token``, ``refresh_token``), variable names are not. A refresh token is never exported: such an entry is
accepted and reported once, as a note shown by ``authsome register``. A file in authsome's format also exports the
credential under authsome's default name (``<NAME>_API_KEY`` / ``<NAME>_ACCESS_TOKEN``) unless ``env`` names it.
"""

from __future__ import annotations

import re

from authsome.providers.validate import ENV_RE, Where, env_name, type_name

CREDENTIAL_FIELDS = ("api_key", "access_token", "refresh_token")
URL_KINDS = ("base_url", "api_url")
SOURCES = {"API_TOKEN": "", "ACCESS_TOKEN": "", "BASE_URL": "base_url", "API_URL": "api_url"}
_REFRESH = "refresh_token"


def default_variable(provider: str, kind: str) -> str:
    """authsome's variable name for a credential that its ``export`` does not name: ``GITHUB_MCP_API_KEY``."""
    return re.sub(r"[^A-Z0-9]+", "_", provider.upper()).strip("_") + "_" + kind.upper()


def is_authsome_export(raw: object) -> bool:
    """Whether an ``export`` block uses one of authsome's spellings (credential -> variable, or flat)."""
    if not isinstance(raw, dict):
        return False
    env = raw.get("env")
    flat = any(key != "env" and not str(key).startswith("_") for key in raw)
    return flat or (isinstance(env, dict) and any(key in CREDENTIAL_FIELDS for key in env))


def parse_export(
    where: Where, raw: object, *, provider: str, kind: str, env_var: str | None, authsome: bool
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Variable -> what it carries (``kind``, ``base_url`` or ``api_url``), and the notes for ``register``.

    ``kind`` is the provider's credential (``api_key`` or ``access_token``); ``env_var`` is ``api_key.env_var``,
    exported when there is no ``export`` block in this project's format; ``authsome`` says the file is in authsome's.
    """
    if raw is None:
        if authsome:
            return {default_variable(provider, kind): kind}, ()
        return ({env_var: kind} if kind == "api_key" and env_var else {}), ()
    if not isinstance(raw, dict):
        raise where.error("export", f"must be a JSON object, not {type_name(raw)}")
    out: dict[str, str] = {}
    withheld: list[str] = []
    env = raw.get("env", {})
    if env is None:
        env = {}
    if not isinstance(env, dict):
        raise where.error("export.env", f"must be an object mapping variable names to {kind!r}")
    for key, value in env.items():
        if key in CREDENTIAL_FIELDS:  # authsome 0.2.x: credential -> variable
            field, var = key, env_name(where, f"export.env.{key}", value)
        else:
            var, field = env_name(where, "export.env", key), value
            if field not in CREDENTIAL_FIELDS:
                raise where.error(f"export.env.{key}", f"must be {kind!r} for this provider, not {field!r}")
        if field == _REFRESH:
            withheld.append(var)
        elif field != kind:
            raise where.error(f"export.env.{key}", f"must be {kind!r} for this provider, not {field!r}")
        else:
            out[var] = kind
    if authsome and kind not in out.values():
        out[default_variable(provider, kind)] = kind
    for var, source in raw.items():
        if var == "env" or str(var).startswith("_"):
            continue
        if not ENV_RE.fullmatch(var):
            raise where.error(f"export.{var}", "is not a valid environment variable name (nor 'env')")
        upper = source.upper() if isinstance(source, str) else None
        if upper == _REFRESH.upper():
            withheld.append(var)
            continue
        if upper not in SOURCES:
            raise where.error(f"export.{var}", f"must be one of {', '.join(SOURCES)}, not {source!r}")
        out[var] = SOURCES[upper] or kind
    if not withheld:
        return out, ()
    names = ", ".join(withheld)
    return out, (f"export: {names} will not be set: refresh tokens are never exported (they stay in the store)",)
