"""Fields that only authsome's own provider files (0.2.x ``.json``, 0.7.x ``.jsonc``) use, and how each is read here.

Read with authsome's meaning: ``api_url`` (0.7.x) routes like ``host_url`` (both are kept when a file has both),
``registration.registration_endpoint`` is ``oauth.registration_endpoint`` and ``docs_url`` is ``docs``. Descriptive
fields (``logo``, ``description``, ``type``, ``metadata``) and OAuth flags that change nothing here (``pkce``: PKCE is
always used; ``supports_device_flow``/``supports_device_code``/``supports_dcr``: ``--flow`` decides;
``authorization_method``: a client secret is always sent with HTTP Basic) are checked for their type and otherwise
ignored. ``docs/providers.md`` ("Coming from authsome") lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authsome.providers.export import is_authsome_export
from authsome.providers.validate import Where, choice, json_object, text, type_name

TOP_FIELDS = frozenset({"api_url", "registration", "docs_url", "logo", "description", "type", "metadata"})
OAUTH_FLAGS = ("pkce", "supports_device_flow", "supports_device_code", "supports_dcr")
OAUTH_FIELDS = frozenset({*OAUTH_FLAGS, "authorization_method"})
PROVIDER_TYPES = ("app", "llm", "mcp", "browser")


def is_authsome_file(obj: Mapping[str, Any]) -> bool:
    """Whether a definition is written in authsome's format (then its export names and host rules follow authsome)."""
    oauth = obj.get("oauth")
    return (
        any(key in obj for key in TOP_FIELDS)
        or (isinstance(oauth, dict) and any(key in oauth for key in OAUTH_FIELDS))
        or is_authsome_export(obj.get("export"))
    )


def check_descriptive(where: Where, obj: Mapping[str, Any]) -> None:
    """The top-level fields that only describe the provider: right type, otherwise ignored."""
    for key in ("logo", "description"):
        text(where, obj, key, 2000)
    choice(where, obj, "type", PROVIDER_TYPES, default="app")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise where.error("metadata", f"must be a JSON object, not {type_name(metadata)}")


def check_oauth_flags(where: Where, oauth: Mapping[str, Any]) -> None:
    """authsome's OAuth flags that change nothing here: right type, otherwise ignored."""
    for key in OAUTH_FLAGS:
        value = oauth.get(key)
        if value is not None and not isinstance(value, bool):
            raise where.error(f"oauth.{key}", f"must be true or false, not {type_name(value)}")
    choice(where, oauth, "authorization_method", ("body", "basic"), default="basic", prefix="oauth.")


def registration_endpoint(where: Where, obj: Mapping[str, Any]) -> str | None:
    """``registration.registration_endpoint`` (authsome 0.7.x keeps it outside ``oauth``), unchecked, or None."""
    raw = obj.get("registration")
    if raw is None:
        return None
    block = json_object(where, raw, "registration", ("registration_endpoint",))
    value = block.get("registration_endpoint")
    if value is not None and not isinstance(value, str):
        raise where.error("registration.registration_endpoint", f"must be a string, not {type_name(value)}")
    return value
