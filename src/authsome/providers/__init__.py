"""Provider definitions: the JSON schema, host rules and the registry of bundled and user providers."""

from __future__ import annotations

from authsome.providers.hosts import HostRule, canonical_host, parse_host_rule
from authsome.providers.registry import Registry
from authsome.providers.schema import Provider, parse_provider

__all__ = ["HostRule", "Provider", "Registry", "canonical_host", "parse_host_rule", "parse_provider"]
