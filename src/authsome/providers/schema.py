"""The provider definition: typed, frozen value objects and a hand-written validator for the JSON form.

Validation is hand-written (no pydantic/jsonschema) so that loading every bundled provider takes milliseconds and
importing it costs the CLI nothing. Every rejection is a :class:`~authsome.errors.UsageError` with one line that
names the provider or file and the field, e.g. ``provider file acme.json: oauth.token_url: must be an https:// URL``.
The JSON form is documented in ``docs/providers.md``. authsome's own files (0.2.x and 0.7.x) are read too, with
authsome's meaning: see :mod:`authsome.providers.authsome_format` and :mod:`authsome.providers.export`.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from authsome.errors import UsageError
from authsome.paths import check_name
from authsome.providers import authsome_format
from authsome.providers.export import URL_KINDS, parse_export
from authsome.providers.hosts import HostRule, narrow_host_pattern, parse_host_rule
from authsome.providers.key_pattern import check_key_pattern
from authsome.providers.validate import (
    CONTROL_RE,
    ENV_RE,
    HINT,
    URL_RE,
    Where,
    check_url,
    choice,
    get_str,
    json_object,
    text,
    type_name,
    url_parts,
)
from authsome.providers.well_known import well_known_urls

SCHEMA_VERSION = 1
PLACEHOLDER = "authsome-proxy-managed"
AuthType = Literal["oauth2", "api_key"]
Flow = Literal["pkce", "device_code", "dcr_pkce", "api_key"]
Source = Literal["bundled", "user"]
DeviceTokenRequest = Literal["oauth2_form", "json"]
BasicAuth = Literal["username", "password"]

_FLOWS: dict[str, tuple[str, ...]] = {"api_key": ("api_key",), "oauth2": ("pkce", "device_code", "dcr_pkce")}
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 token
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,256}")  # RFC 6749 scope-token
_PARAM_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FORBIDDEN_HEADERS = frozenset(
    {"host", "connection", "content-length", "transfer-encoding", "te", "upgrade", "keep-alive", "trailer", "cookie"}
)
_RESERVED_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}
)
_BASE = "{base_url}"
_OAUTH_URLS = (
    "authorization_url",
    "token_url",
    "revocation_url",
    "device_authorization_url",
    "registration_endpoint",
    "userinfo_url",
    "issuer",
)
_TOP_KEYS = (
    frozenset({"schema_version", "name", "display_name", "auth_type", "flow", "oauth", "api_key", "client"})
    | {"host_url", "export", "docs"}
    | authsome_format.TOP_FIELDS
)
_OAUTH_KEYS = (
    frozenset(_OAUTH_URLS)
    | {"scopes", "base_url", "authorization_params", "device_token_request"}
    | authsome_format.OAUTH_FIELDS
)
_API_KEY_KEYS = frozenset({"header_name", "header_prefix", "env_var", "key_pattern", "key_pattern_hint", "basic_auth"})
_CLIENT_KEYS = frozenset({"client_id_env", "client_secret_env"})
_BROWSER_HINT = "authsome's browser providers read a browser's cookie database; authsome here never does"


@dataclass(frozen=True)
class OAuthConfig:
    """OAuth 2.0 endpoints and default scopes; URLs are already resolved against ``base_url``."""

    authorization_url: str | None = None
    token_url: str | None = None
    revocation_url: str | None = None
    device_authorization_url: str | None = None
    registration_endpoint: str | None = None
    userinfo_url: str | None = None
    issuer: str | None = None
    scopes: tuple[str, ...] = ()
    base_url: str | None = None
    authorization_params: tuple[tuple[str, str], ...] = ()
    device_token_request: DeviceTokenRequest = "oauth2_form"


@dataclass(frozen=True)
class ApiKeyConfig:
    """How a key (or token) is sent: ``<header_name>: <header_prefix> <secret>``; where it comes from at login.

    ``basic_auth`` sends HTTP Basic instead, the key being the user name (``"username"``: ``base64(key:)``) or the
    password (``"password"``: ``base64(:key)``).
    """

    header_name: str = "Authorization"
    header_prefix: str = "Bearer"
    env_var: str | None = None
    key_pattern: str | None = None
    key_pattern_hint: str | None = None
    basic_auth: BasicAuth | None = None


@dataclass(frozen=True)
class ClientSpec:
    """Names of environment variables holding an OAuth client id/secret (never the values themselves)."""

    client_id_env: str | None = None
    client_secret_env: str | None = None


@dataclass(frozen=True)
class Provider:
    """One validated provider definition.

    ``notes`` says what of the file is not used as written (a refresh-token export, a host rule narrowed or left
    out); ``authsome register`` shows them once.
    """

    schema_version: int
    name: str
    display_name: str
    auth_type: AuthType
    flow: Flow
    oauth: OAuthConfig | None
    api_key: ApiKeyConfig | None
    client: ClientSpec
    host_rules: tuple[HostRule, ...]
    export_env: dict[str, str] = field(hash=False)
    docs: str | None = None
    source: Source = "user"
    path: Path | None = None
    raw: Mapping[str, Any] | None = field(default=None, repr=False, compare=False, hash=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def header(self, secret_value: str) -> tuple[str, str]:
        """The request header that carries ``secret_value`` (an API key or an OAuth access token).

        ``header_prefix`` and the secret are joined with one space, unless the prefix is empty (a trailing space in
        the prefix is tolerated: ``"Bearer "`` and ``"Bearer"`` both give ``Bearer <secret>``).
        """
        if not secret_value or CONTROL_RE.search(secret_value) or not secret_value.isprintable():
            raise UsageError(
                f"the stored {self.name} credential is empty or contains control characters",
                f"run `authsome login {self.name} --force`",
            )
        if self.api_key is None:
            return "Authorization", "Bearer " + secret_value
        if self.api_key.basic_auth is not None:
            pair = f"{secret_value}:" if self.api_key.basic_auth == "username" else f":{secret_value}"
            return self.api_key.header_name, "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        prefix = self.api_key.header_prefix.rstrip(" ")
        return self.api_key.header_name, f"{prefix} {secret_value}" if prefix else secret_value

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``{base_url}`` templates kept); ``parse_provider(p.to_dict()) == p``."""
        if self.raw is not None:
            return copy.deepcopy(dict(self.raw))
        return _build_dict(self)

    def with_base_url(self, url: str) -> Provider:
        """A copy for a self-hosted instance: ``{base_url}`` in OAuth URLs and ``host_url`` becomes ``url``."""
        data = self.to_dict()
        oauth = data.get("oauth")
        if not isinstance(oauth, dict):
            raise UsageError(f"provider {self.name} has no OAuth settings, so --base-url does not apply", HINT)
        oauth["base_url"] = url
        return parse_provider(data, source=self.source, path=self.path)

    @property
    def key_variables(self) -> tuple[str, ...]:
        """Where ``authsome login`` looks for an API key: ``api_key.env_var``, then each API-key export variable."""
        first = (self.api_key.env_var,) if self.api_key is not None and self.api_key.env_var else ()
        return tuple(dict.fromkeys([*first, *(v for v, k in self.export_env.items() if k == "api_key")]))

    @property
    def oauth_hosts(self) -> frozenset[str]:
        """Canonical hosts of this provider's own OAuth endpoints (see :attr:`oauth_endpoints`).

        Several providers (Slack, Discord, X, Notion, Linear…) serve their token endpoint on the API host itself,
        so a router should skip injection per endpoint with :meth:`is_oauth_endpoint`, not per host.
        """
        return frozenset(host for host, _, _ in self.oauth_endpoints)

    @property
    def oauth_endpoints(self) -> tuple[tuple[str, int, str], ...]:
        """(canonical host, port, path) of the authorization, token, revocation, device and registration endpoints,
        plus the issuer's discovery documents. The userinfo URL is an ordinary API call and is not included."""
        if self.oauth is None:
            return ()
        o = self.oauth
        urls = [o.authorization_url, o.token_url, o.revocation_url, o.device_authorization_url, o.registration_endpoint]
        if o.issuer:
            urls += well_known_urls(o.issuer)
        return tuple((host, port, path.rstrip("/")) for host, port, path in map(url_parts, filter(None, urls)))

    def is_oauth_endpoint(self, host: str, port: int, path: str) -> bool:
        """Whether a request to canonical ``host``:``port`` ``path`` targets one of :attr:`oauth_endpoints`."""
        bare = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        return any(bare == p and host == h and port == n for h, n, p in self.oauth_endpoints)

    def placeholder_env(self) -> dict[str, str]:
        """Each secret export variable mapped to the placeholder the proxy's child sees instead of the secret.

        ``base_url``/``api_url`` variables are not secrets and a placeholder would break the client: left out.
        """
        return {var: PLACEHOLDER for var, kind in self.export_env.items() if kind not in URL_KINDS}

    def export_urls(self) -> dict[str, str]:
        """Values of ``base_url``/``api_url`` export variables (authsome 0.7.x ``BASE_URL``/``API_URL`` sources).

        ``base_url`` is ``oauth.base_url`` (as the connection logged in with it); ``api_url`` is the first exact host
        rule as an https URL, else ``base_url``.
        """
        base = self.oauth.base_url if self.oauth is not None else None
        exact = next((r for r in self.host_rules if r.kind == "exact" and r.host), None)
        api = None
        if exact is not None and exact.host is not None:
            host = f"[{exact.host}]" if ":" in exact.host else exact.host
            api = f"https://{host}{'' if exact.port == 443 else f':{exact.port}'}{exact.path_prefix}"
        values = {"base_url": base, "api_url": api or base}
        return {k: v for k, v in values.items() if v}


def _build_dict(p: Provider) -> dict[str, Any]:
    """The JSON form of a provider built directly from its fields (no templates)."""
    out: dict[str, Any] = {
        "schema_version": p.schema_version,
        "name": p.name,
        "display_name": p.display_name,
        "auth_type": p.auth_type,
        "flow": p.flow,
    }
    if p.oauth is not None:
        o = {k: getattr(p.oauth, k) for k in (*_OAUTH_URLS, "base_url") if getattr(p.oauth, k) is not None}
        out["oauth"] = {**o, "scopes": list(p.oauth.scopes)}
        if p.oauth.authorization_params:
            out["oauth"]["authorization_params"] = dict(p.oauth.authorization_params)
        if p.oauth.device_token_request != "oauth2_form":
            out["oauth"]["device_token_request"] = p.oauth.device_token_request
    if p.api_key is not None:
        out["api_key"] = {k: v for k, v in vars(p.api_key).items() if v is not None}
    client = {k: v for k, v in vars(p.client).items() if v is not None}
    if client:
        out["client"] = client
    if p.host_rules:
        out["host_url"] = [r.raw for r in p.host_rules]
    out["export"] = {"env": dict(p.export_env)}
    if p.docs is not None:
        out["docs"] = p.docs
    return out


# -- parsing ------------------------------------------------------------------------------------------------------


def parse_provider(data: object, *, source: str = "user", path: Path | None = None) -> Provider:
    """Validate the JSON form of a provider and build a :class:`Provider`; :class:`UsageError` when it is wrong."""
    return parse_owned(copy.deepcopy(data), source=source, path=path)


def parse_owned(data: object, *, source: str = "user", path: Path | None = None) -> Provider:
    """:func:`parse_provider` for ``data`` that nobody else holds (freshly decoded JSON): it is kept, not copied."""
    where = Where(path)
    if source not in ("bundled", "user"):
        raise where.error("source", f"must be 'bundled' or 'user', not {source!r}")
    if isinstance(data, dict) and data.get("auth_type") == "browser":
        where.name = data.get("name") if isinstance(data.get("name"), str) else None
        raise where.error("auth_type", "'browser' (a browser-cookie provider) is not supported", _BROWSER_HINT)
    obj = json_object(where, data, "", _TOP_KEYS)
    name = get_str(where, obj, "name", required=True)
    assert name is not None
    try:
        check_name("provider", name)
    except UsageError as exc:
        raise where.error("name", f"invalid name {name!r}", exc.hint or HINT) from None
    where.name = name
    version = obj.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise where.error("schema_version", f"must be {SCHEMA_VERSION}, not {version!r}")
    display_name = text(where, obj, "display_name", 100) or name
    auth_type = choice(where, obj, "auth_type", ("oauth2", "api_key"), default=None)
    flows = _FLOWS[auth_type]
    flow = choice(where, obj, "flow", flows, default=flows[0], what=f"{auth_type} provider")
    authsome = authsome_format.is_authsome_file(obj)
    authsome_format.check_descriptive(where, obj)

    base_url, oauth = _oauth(where, obj, auth_type, flow, authsome)
    api_key = _api_key(where, obj, auth_type)
    client = _client(where, obj, auth_type)
    host_rules, host_notes = _host_rules(where, obj, base_url, lenient=authsome)
    kind = "api_key" if auth_type == "api_key" else "access_token"
    env_var = api_key.env_var if api_key is not None else None
    export_env, export_notes = parse_export(
        where, obj.get("export"), provider=name, kind=kind, env_var=env_var, authsome=authsome
    )
    docs = text(where, obj, "docs", 2000) or text(where, obj, "docs_url", 2000)
    return Provider(
        schema_version=SCHEMA_VERSION,
        name=name,
        display_name=display_name,
        auth_type=cast(AuthType, auth_type),
        flow=cast(Flow, flow),
        oauth=oauth,
        api_key=api_key,
        client=client,
        host_rules=host_rules,
        export_env=export_env,
        docs=docs,
        source=cast(Source, source),
        path=path,
        raw=obj,
        notes=(*host_notes, *export_notes),
    )


def _oauth(
    where: Where, obj: Mapping[str, Any], auth_type: str, flow: str, authsome: bool
) -> tuple[str | None, OAuthConfig | None]:
    raw = obj.get("oauth")
    if raw is None:
        if auth_type == "oauth2":
            raise where.error("oauth", "is required for an oauth2 provider (at least oauth.token_url)")
        if obj.get("registration") is not None:
            raise where.error("registration", "is only allowed when auth_type is 'oauth2'")
        return None, None
    if auth_type != "oauth2":
        raise where.error("oauth", "is only allowed when auth_type is 'oauth2'")
    o = json_object(where, raw, "oauth", _OAUTH_KEYS)
    authsome_format.check_oauth_flags(where, o)
    base_url = get_str(where, o, "base_url", prefix="oauth.")
    if base_url is not None:
        base_url = check_url(where, "oauth.base_url", base_url.rstrip("/"))
        if "?" in base_url:
            raise where.error("oauth.base_url", "must not contain a query")
    registration = authsome_format.registration_endpoint(where, obj)
    urls: dict[str, str | None] = {}
    for key in _OAUTH_URLS:
        value = get_str(where, o, key, prefix="oauth.")
        label = f"oauth.{key}"
        if value is None and key == "registration_endpoint" and registration is not None:
            value, label = registration, "registration.registration_endpoint"
        if value is not None:
            value = check_url(where, label, _resolve(where, label, value, base_url))
        urls[key] = value
    scopes = o.get("scopes") or []
    if not isinstance(scopes, list) or not all(isinstance(s, str) and _SCOPE_RE.fullmatch(s) for s in scopes):
        raise where.error("oauth.scopes", "must be a list of non-empty scope strings without spaces or quotes")
    if flow == "dcr_pkce" and authsome and not (urls["registration_endpoint"] or urls["issuer"]):
        urls["issuer"] = _origin(urls["authorization_url"])  # authsome discovers registration at that origin
    _require_endpoints(where, flow, urls)
    return base_url, OAuthConfig(
        scopes=tuple(scopes),
        base_url=base_url,
        authorization_params=_authorization_params(where, o),
        device_token_request=cast(
            DeviceTokenRequest,
            choice(where, o, "device_token_request", ("oauth2_form", "json"), default="oauth2_form", prefix="oauth."),
        ),
        **urls,
    )


def _origin(url: str | None) -> str | None:
    m = URL_RE.fullmatch(url) if url else None
    return f"{m.group(1)}://{m.group(2)}" if m else None


def _require_endpoints(where: Where, flow: str, urls: Mapping[str, str | None]) -> None:
    required = {
        "pkce": ("authorization_url",),
        "device_code": ("device_authorization_url",),
        "dcr_pkce": ("registration_endpoint", "issuer"),
    }[flow]
    if flow != "dcr_pkce" and not urls["token_url"]:
        raise where.error("oauth.token_url", "is required for an oauth2 provider")
    if not any(urls[k] for k in required):
        raise where.error(
            f"oauth.{required[0]}",
            f"is required for flow {flow!r}" + (" (or oauth.issuer, for discovery)" if flow == "dcr_pkce" else ""),
        )


def _authorization_params(where: Where, o: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Extra query parameters of the authorization request (``{"access_type": "offline"}``)."""
    raw = o.get("authorization_params")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise where.error("oauth.authorization_params", f"must be a JSON object, not {type_name(raw)}")
    for key, value in raw.items():
        label = f"oauth.authorization_params.{key}"
        if not _PARAM_RE.fullmatch(key) or key in _RESERVED_PARAMS:
            raise where.error(label, "is not a parameter a provider file may set")
        if not isinstance(value, str) or CONTROL_RE.search(value) or len(value) > 256:
            raise where.error(label, "must be a string of at most 256 characters without control characters")
    return tuple(sorted(raw.items()))


def _resolve(where: Where, field_name: str, value: str, base_url: str | None) -> str:
    if _BASE not in value:
        return value
    if not value.startswith(_BASE) or value.count(_BASE) > 1:
        raise where.error(field_name, "{base_url} may only appear once, at the start")
    if base_url is None:
        raise where.error("oauth.base_url", f"is required because {field_name} uses {{base_url}}")
    return base_url + value[len(_BASE) :]


def _api_key(where: Where, obj: Mapping[str, Any], auth_type: str) -> ApiKeyConfig | None:
    raw = obj.get("api_key")
    if raw is None:
        return ApiKeyConfig() if auth_type == "api_key" else None
    a = json_object(where, raw, "api_key", _API_KEY_KEYS)
    header_name = get_str(where, a, "header_name", prefix="api_key.")
    header_prefix = get_str(where, a, "header_prefix", prefix="api_key.")
    env_var = get_str(where, a, "env_var", prefix="api_key.")
    key_pattern = get_str(where, a, "key_pattern", prefix="api_key.")
    hint = text(where, a, "key_pattern_hint", 500, prefix="api_key.")
    basic = a.get("basic_auth")
    if basic is not None:
        basic = choice(where, a, "basic_auth", ("username", "password"), default=None, prefix="api_key.")
        if header_prefix not in (None, "Basic", "Basic "):
            raise where.error("api_key.header_prefix", "must be absent (or 'Basic') with api_key.basic_auth")
    if header_name is not None:
        if not _TOKEN_RE.fullmatch(header_name) or len(header_name) > 100:
            reason = f"{header_name!r} is not a valid HTTP header name (RFC 7230 token)"
            raise where.error("api_key.header_name", reason)
        low = header_name.lower()
        if low in _FORBIDDEN_HEADERS or low.startswith("proxy-"):
            raise where.error("api_key.header_name", f"{header_name!r} cannot carry a credential")
    if header_prefix is not None and (
        CONTROL_RE.search(header_prefix) or not header_prefix.isascii() or len(header_prefix) > 100
    ):
        raise where.error("api_key.header_prefix", "must be printable ASCII without control characters")
    if env_var is not None and not ENV_RE.fullmatch(env_var):
        raise where.error("api_key.env_var", f"{env_var!r} is not a valid environment variable name")
    if key_pattern is not None:
        try:
            check_key_pattern(key_pattern)
        except ValueError as exc:
            raise where.error("api_key.key_pattern", str(exc)) from None
    defaults = ApiKeyConfig()
    no_prefix = "header_prefix" in a and header_prefix is None  # authsome 0.7.x: null = no prefix
    return ApiKeyConfig(
        header_name=defaults.header_name if header_name is None else header_name,
        header_prefix="" if no_prefix else (defaults.header_prefix if header_prefix is None else header_prefix),
        env_var=env_var,
        key_pattern=key_pattern,
        key_pattern_hint=hint,
        basic_auth=cast(BasicAuth | None, basic),
    )


def _client(where: Where, obj: Mapping[str, Any], auth_type: str) -> ClientSpec:
    raw = obj.get("client")
    if raw is None:
        return ClientSpec()
    if auth_type != "oauth2":
        raise where.error("client", "is only allowed when auth_type is 'oauth2'")
    c = json_object(where, raw, "client", _CLIENT_KEYS)
    values = {}
    for key in sorted(_CLIENT_KEYS):
        value = get_str(where, c, key, prefix="client.")
        if value is not None and not ENV_RE.fullmatch(value):
            raise where.error(f"client.{key}", f"{value!r} is not a valid environment variable name")
        values[key] = value
    return ClientSpec(**values)


def _host_rules(
    where: Where, obj: Mapping[str, Any], base_url: str | None, *, lenient: bool
) -> tuple[tuple[HostRule, ...], tuple[str, ...]]:
    """Rules from ``host_url`` and ``api_url`` (authsome 0.7.x), and notes about rules not used as written.

    In authsome's files (``lenient``) a broad regex that this project refuses is narrowed to the whole-label form
    (:func:`~authsome.providers.hosts.narrow_host_pattern`) or, when that is not possible, left out with a note.
    """
    rules: dict[str, HostRule] = {}
    notes: list[str] = []
    for key in ("host_url", "api_url"):
        raw = obj.get(key)
        if raw is None:
            continue
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise where.error(key, "must be a string or a non-empty list of strings")
        for item in items:
            entry = item
            if _BASE in item:
                resolved = _resolve(where, key, item, base_url)
                entry = "https://" + resolved.split("://", 1)[1]  # a loopback http:// base still routes only HTTPS
            try:
                rule = parse_host_rule(entry)
            except ValueError as exc:
                if not (lenient and entry.startswith("regex:")):
                    raise where.error(key, str(exc)) from None
                narrowed = narrow_host_pattern(entry[len("regex:") :])
                if narrowed is None:
                    notes.append(f"{key}: {_quote(item)} is not used, so those hosts get no credential: {exc}")
                    continue
                rule = parse_host_rule("regex:" + narrowed)
                notes.append(f"{key}: {_quote(item)} is used as {_quote(rule.raw)} (whole labels only)")
            rules.setdefault(rule.raw, rule)
    return tuple(rules.values()), tuple(notes)


def _quote(value: str) -> str:
    """``'value'`` as written in the file (``repr`` when it has characters a terminal should not print)."""
    return f"'{value}'" if value.isprintable() else repr(value)
