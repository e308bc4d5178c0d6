"""The provider definition: typed, frozen value objects and a hand-written validator for the JSON form.

Validation is hand-written (no pydantic/jsonschema) so that loading every bundled provider takes milliseconds.
Every rejection is a :class:`~authsome.errors.UsageError` with one line that names the provider or file and the
field, e.g. ``provider file acme.json: oauth.token_url: must be an https:// URL``. The JSON form is documented
in ``docs/providers.md``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from authsome.errors import UsageError
from authsome.paths import check_name
from authsome.providers.hosts import HostRule, canonical_host, parse_host_rule

SCHEMA_VERSION = 1
PLACEHOLDER = "authsome-proxy-managed"
AuthType = Literal["oauth2", "api_key"]
Flow = Literal["pkce", "device_code", "dcr_pkce", "api_key"]
Source = Literal["bundled", "user"]
ExportKind = Literal["api_key", "access_token"]

_FLOWS: dict[str, tuple[str, ...]] = {"api_key": ("api_key",), "oauth2": ("pkce", "device_code", "dcr_pkce")}
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 token
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,256}")  # RFC 6749 scope-token
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_URL_RE = re.compile(r"(https?)://([^/?#@\s\\]+)((?:[/?][^\s#]*)?)")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_FORBIDDEN_HEADERS = frozenset(
    {"host", "connection", "content-length", "transfer-encoding", "te", "upgrade", "keep-alive", "trailer", "cookie"}
)
_BASE = "{base_url}"
_DISCOVERY_AS = "/.well-known/oauth-authorization-server"
_DISCOVERY_OIDC = "/.well-known/openid-configuration"
_OAUTH_URLS = (
    "authorization_url",
    "token_url",
    "revocation_url",
    "device_authorization_url",
    "registration_endpoint",
    "userinfo_url",
    "issuer",
)
_TOP_KEYS = frozenset(
    {"schema_version", "name", "display_name", "auth_type", "flow", "oauth", "api_key", "client", "host_url"}
    | {"export", "docs"}
)
_OAUTH_KEYS = frozenset(_OAUTH_URLS) | {"scopes", "base_url"}
_API_KEY_KEYS = frozenset({"header_name", "header_prefix", "env_var", "key_pattern"})
_CLIENT_KEYS = frozenset({"client_id_env", "client_secret_env"})
_HINT = "fix the provider definition; docs/providers.md describes every field"


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


@dataclass(frozen=True)
class ApiKeyConfig:
    """How a key (or token) is sent: ``<header_name>: <header_prefix><secret>``; where it comes from at login."""

    header_name: str = "Authorization"
    header_prefix: str = "Bearer "
    env_var: str | None = None
    key_pattern: str | None = None


@dataclass(frozen=True)
class ClientSpec:
    """Names of environment variables holding an OAuth client id/secret (never the values themselves)."""

    client_id_env: str | None = None
    client_secret_env: str | None = None


@dataclass(frozen=True)
class Provider:
    """One validated provider definition."""

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

    def header(self, secret_value: str) -> tuple[str, str]:
        """The request header that carries ``secret_value`` (an API key or an OAuth access token)."""
        if not secret_value or _CONTROL_RE.search(secret_value) or not secret_value.isprintable():
            raise UsageError(
                f"the stored {self.name} credential is empty or contains control characters",
                f"run `authsome login {self.name} --force`",
            )
        if self.api_key is not None:
            return self.api_key.header_name, self.api_key.header_prefix + secret_value
        return "Authorization", "Bearer " + secret_value

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
            raise UsageError(f"provider {self.name} has no OAuth settings, so --base-url does not apply", _HINT)
        oauth["base_url"] = url
        return parse_provider(data, source=self.source, path=self.path)

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
            base = o.issuer.rstrip("/")
            urls += [base + _DISCOVERY_AS, base + _DISCOVERY_OIDC]
        return tuple(_url_parts(u) for u in urls if u)

    def is_oauth_endpoint(self, host: str, port: int, path: str) -> bool:
        """Whether a request to canonical ``host``:``port`` ``path`` targets one of :attr:`oauth_endpoints`."""
        bare = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        return any(bare == p and host == h and port == n for h, n, p in self.oauth_endpoints)

    def placeholder_env(self) -> dict[str, str]:
        """Each export variable mapped to the placeholder the proxy's child sees instead of the secret."""
        return dict.fromkeys(self.export_env, PLACEHOLDER)


def _split_authority(authority: str) -> tuple[str, str | None]:
    """``host`` and ``port`` (or None) of a URL authority; IPv6 literals keep their brackets."""
    if authority.startswith("["):
        end = authority.find("]")
        rest = authority[end + 1 :]
        return authority[: end + 1], (rest[1:] if rest.startswith(":") else rest or None)
    if ":" in authority:
        host, port = authority.rsplit(":", 1)
        return host, port
    return authority, None


def _url_parts(url: str) -> tuple[str, int, str]:
    m = _URL_RE.fullmatch(url)
    if m is None:  # pragma: no cover - URLs are validated at parse time
        raise ValueError(f"invalid URL {url!r}")
    scheme, authority, path = m.groups()
    host, port = _split_authority(authority)
    number = int(port) if port else (443 if scheme == "https" else 80)
    return canonical_host(host), number, path.split("?", 1)[0].rstrip("/")


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


class _Ctx:
    """Where a definition came from, for one-line error messages."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.name: str | None = None

    def error(self, field_name: str, reason: str, hint: str = _HINT) -> UsageError:
        if self.path is not None:
            where = f"provider file {self.path}"
        elif self.name is not None:
            where = f"provider {self.name!r}"
        else:
            where = "provider definition"
        return UsageError(f"{where}: {field_name}: {reason}" if field_name else f"{where}: {reason}", hint)


def parse_provider(data: object, *, source: str = "user", path: Path | None = None) -> Provider:
    """Validate the JSON form of a provider and build a :class:`Provider`; :class:`UsageError` when it is wrong."""
    return parse_owned(copy.deepcopy(data), source=source, path=path)


def parse_owned(data: object, *, source: str = "user", path: Path | None = None) -> Provider:
    """:func:`parse_provider` for ``data`` that nobody else holds (freshly decoded JSON): it is kept, not copied."""
    ctx = _Ctx(path)
    if source not in ("bundled", "user"):
        raise ctx.error("source", f"must be 'bundled' or 'user', not {source!r}")
    obj = _object(ctx, data, "", _TOP_KEYS)
    name = _required_str(ctx, obj, "name")
    try:
        check_name("provider", name)
    except UsageError as exc:
        raise ctx.error("name", f"invalid name {name!r}", exc.hint or _HINT) from None
    ctx.name = name
    version = obj.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ctx.error("schema_version", f"must be {SCHEMA_VERSION}, not {version!r}")
    display_name = _str(ctx, obj, "display_name") or name
    if _CONTROL_RE.search(display_name) or len(display_name) > 100:
        raise ctx.error("display_name", "must be at most 100 characters without control characters")
    auth_type = _choice(ctx, obj, "auth_type", ("oauth2", "api_key"), default=None)
    flow = _choice(ctx, obj, "flow", _FLOWS[auth_type], default=_FLOWS[auth_type][0], what=f"{auth_type} provider")

    base_url, oauth = _oauth(ctx, obj, auth_type, flow)
    api_key = _api_key(ctx, obj, auth_type)
    client = _client(ctx, obj, auth_type)
    host_rules = _host_rules(ctx, obj, base_url)
    export_env = _export(ctx, obj, auth_type, api_key)
    docs = _str(ctx, obj, "docs")
    if docs is not None and (_CONTROL_RE.search(docs) or len(docs) > 2000):
        raise ctx.error("docs", "must be at most 2000 characters without control characters")
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
    )


def _object(ctx: _Ctx, value: object, field_name: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(field_name, f"must be a JSON object, not {_type(value)}")
    for key in value:
        if key not in allowed:
            where = f"{field_name}.{key}" if field_name else str(key)
            raise ctx.error(where, "unknown field", f"allowed fields: {', '.join(sorted(allowed))}")
    return cast(dict[str, Any], value)


def _type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _str(ctx: _Ctx, obj: Mapping[str, Any], key: str, *, prefix: str = "", required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ctx.error(prefix + key, "is required")
        return None
    if not isinstance(value, str):
        raise ctx.error(prefix + key, f"must be a string, not {_type(value)}")
    return value


def _required_str(ctx: _Ctx, obj: Mapping[str, Any], key: str) -> str:
    value = _str(ctx, obj, key, required=True)
    assert value is not None
    return value


def _choice(
    ctx: _Ctx, obj: Mapping[str, Any], key: str, choices: tuple[str, ...], *, default: str | None, what: str = ""
) -> str:
    value = _str(ctx, obj, key, required=default is None)
    if value is None:
        assert default is not None
        return default
    if value not in choices:
        allowed = " or ".join(repr(c) for c in choices)
        raise ctx.error(key, f"{value!r} is not valid{' for an ' + what if what else ''}; use {allowed}")
    return value


def _check_url(ctx: _Ctx, field_name: str, url: str) -> str:
    m = _URL_RE.fullmatch(url)
    if m is None or _CONTROL_RE.search(url) or "{" in url or "}" in url:
        raise ctx.error(field_name, f"{url!r} is not a valid https:// URL")
    scheme, authority, _ = m.groups()
    host_part, port = _split_authority(authority)
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ctx.error(field_name, f"{url!r} has an invalid port")
    try:
        host = canonical_host(host_part)
    except ValueError:
        raise ctx.error(field_name, f"{url!r} has an invalid host") from None
    if scheme == "http" and host not in _LOOPBACK:
        raise ctx.error(field_name, f"{url!r} must use https:// (http:// only for 127.0.0.1, localhost or ::1)")
    return url


def _oauth(ctx: _Ctx, obj: Mapping[str, Any], auth_type: str, flow: str) -> tuple[str | None, OAuthConfig | None]:
    raw = obj.get("oauth")
    if raw is None:
        if auth_type == "oauth2":
            raise ctx.error("oauth", "is required for an oauth2 provider (at least oauth.token_url)")
        return None, None
    if auth_type != "oauth2":
        raise ctx.error("oauth", "is only allowed when auth_type is 'oauth2'")
    o = _object(ctx, raw, "oauth", _OAUTH_KEYS)
    base_url = _str(ctx, o, "base_url", prefix="oauth.")
    if base_url is not None:
        base_url = _check_url(ctx, "oauth.base_url", base_url.rstrip("/"))
        if "?" in base_url:
            raise ctx.error("oauth.base_url", "must not contain a query")
    urls: dict[str, str | None] = {}
    for key in _OAUTH_URLS:
        value = _str(ctx, o, key, prefix="oauth.")
        if value is not None:
            value = _check_url(ctx, f"oauth.{key}", _resolve(ctx, f"oauth.{key}", value, base_url))
        urls[key] = value
    scopes = o.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and _SCOPE_RE.fullmatch(s) for s in scopes):
        raise ctx.error("oauth.scopes", "must be a list of non-empty scope strings without spaces or quotes")
    required = {
        "pkce": ("authorization_url",),
        "device_code": ("device_authorization_url",),
        "dcr_pkce": ("registration_endpoint", "issuer"),
    }[flow]
    if flow != "dcr_pkce" and not urls["token_url"]:
        raise ctx.error("oauth.token_url", "is required for an oauth2 provider")
    if not any(urls[k] for k in required):
        raise ctx.error(
            f"oauth.{required[0]}",
            f"is required for flow {flow!r}" + (" (or oauth.issuer, for discovery)" if flow == "dcr_pkce" else ""),
        )
    return base_url, OAuthConfig(scopes=tuple(scopes), base_url=base_url, **urls)


def _resolve(ctx: _Ctx, field_name: str, value: str, base_url: str | None) -> str:
    if _BASE not in value:
        return value
    if not value.startswith(_BASE) or value.count(_BASE) > 1:
        raise ctx.error(field_name, "{base_url} may only appear once, at the start")
    if base_url is None:
        raise ctx.error("oauth.base_url", f"is required because {field_name} uses {{base_url}}")
    return base_url + value[len(_BASE) :]


def _api_key(ctx: _Ctx, obj: Mapping[str, Any], auth_type: str) -> ApiKeyConfig | None:
    raw = obj.get("api_key")
    if raw is None:
        return ApiKeyConfig() if auth_type == "api_key" else None
    a = _object(ctx, raw, "api_key", _API_KEY_KEYS)
    header_name = _str(ctx, a, "header_name", prefix="api_key.")
    header_prefix = _str(ctx, a, "header_prefix", prefix="api_key.")
    env_var = _str(ctx, a, "env_var", prefix="api_key.")
    key_pattern = _str(ctx, a, "key_pattern", prefix="api_key.")
    if header_name is not None:
        if not _TOKEN_RE.fullmatch(header_name) or len(header_name) > 100:
            raise ctx.error("api_key.header_name", f"{header_name!r} is not a valid HTTP header name (RFC 7230 token)")
        low = header_name.lower()
        if low in _FORBIDDEN_HEADERS or low.startswith("proxy-"):
            raise ctx.error("api_key.header_name", f"{header_name!r} cannot carry a credential")
    if header_prefix is not None and (
        _CONTROL_RE.search(header_prefix) or not header_prefix.isascii() or len(header_prefix) > 100
    ):
        raise ctx.error("api_key.header_prefix", "must be printable ASCII without control characters")
    if env_var is not None and not _ENV_RE.fullmatch(env_var):
        raise ctx.error("api_key.env_var", f"{env_var!r} is not a valid environment variable name")
    if key_pattern is not None:
        try:
            check_key_pattern(key_pattern)
        except ValueError as exc:
            raise ctx.error("api_key.key_pattern", str(exc)) from None
    defaults = ApiKeyConfig()
    return ApiKeyConfig(
        header_name=defaults.header_name if header_name is None else header_name,
        header_prefix=defaults.header_prefix if header_prefix is None else header_prefix,
        env_var=env_var,
        key_pattern=key_pattern,
    )


def _client(ctx: _Ctx, obj: Mapping[str, Any], auth_type: str) -> ClientSpec:
    raw = obj.get("client")
    if raw is None:
        return ClientSpec()
    if auth_type != "oauth2":
        raise ctx.error("client", "is only allowed when auth_type is 'oauth2'")
    c = _object(ctx, raw, "client", _CLIENT_KEYS)
    values = {}
    for key in sorted(_CLIENT_KEYS):
        value = _str(ctx, c, key, prefix="client.")
        if value is not None and not _ENV_RE.fullmatch(value):
            raise ctx.error(f"client.{key}", f"{value!r} is not a valid environment variable name")
        values[key] = value
    return ClientSpec(**values)


def _host_rules(ctx: _Ctx, obj: Mapping[str, Any], base_url: str | None) -> tuple[HostRule, ...]:
    raw = obj.get("host_url")
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ctx.error("host_url", "must be a string or a non-empty list of strings")
    rules = []
    for item in items:
        text = item
        if _BASE in item:
            resolved = _resolve(ctx, "host_url", item, base_url)
            text = "https://" + resolved.split("://", 1)[1]  # a loopback http:// base still routes only over HTTPS
        try:
            rules.append(parse_host_rule(text))
        except ValueError as exc:
            raise ctx.error("host_url", str(exc)) from None
    return tuple(rules)


def _export(ctx: _Ctx, obj: Mapping[str, Any], auth_type: str, api_key: ApiKeyConfig | None) -> dict[str, str]:
    raw = obj.get("export")
    expected = "api_key" if auth_type == "api_key" else "access_token"
    if raw is None:
        return {api_key.env_var: "api_key"} if auth_type == "api_key" and api_key and api_key.env_var else {}
    e = _object(ctx, raw, "export", frozenset({"env"}))
    env = e.get("env", {})
    if not isinstance(env, dict):
        raise ctx.error("export.env", f"must be an object mapping variable names to {expected!r}")
    for var, what in env.items():
        if not _ENV_RE.fullmatch(var):
            raise ctx.error("export.env", f"{var!r} is not a valid environment variable name")
        if what != expected:
            raise ctx.error(f"export.env.{var}", f"must be {expected!r} for an {auth_type} provider, not {what!r}")
    return dict(env)


# -- key patterns -------------------------------------------------------------------------------------------------

MAX_KEY_PATTERN_LENGTH = 256
# Fast path: ^? (literal | \escaped | [class] quant?)+ $? ; classes hold only letters, digits, '_', '.', '-'.
_SIMPLE_KEY_RE = re.compile(
    r"\^?(?:[A-Za-z0-9_-]|\\[.\-_]|\[(?:[A-Za-z0-9_.-]|\\-)+\](?:[+*?]|\{[0-9]{1,3}(?:,[0-9]{0,3})?\})?)+\$?"
)
_VARIABLE_RE = re.compile(r"[+*?]|\{[0-9]+,")
_RANGE_RE = re.compile(r"(?<!\\)([A-Za-z0-9])-([A-Za-z0-9])")
_CLASS_RE = re.compile(r"\[([^\]]*)\]")
_COUNT_RE = re.compile(r"\{([0-9]+),([0-9]+)\}")


def _simple_key_pattern(pattern: str) -> bool:
    """Fast path: literals and quantified classes only (no groups), valid ranges, at most two variable repeats."""
    if not _SIMPLE_KEY_RE.fullmatch(pattern) or len(_VARIABLE_RE.findall(pattern)) > 2:
        return False
    ranges = [r for body in _CLASS_RE.findall(pattern) for r in _RANGE_RE.findall(body)]
    ranges_ok = all(lo <= hi and lo.isdigit() == hi.isdigit() for lo, hi in ranges)
    return ranges_ok and all(int(lo) <= int(hi) for lo, hi in _COUNT_RE.findall(pattern))


def check_key_pattern(pattern: str) -> None:
    """Raise ``ValueError`` unless ``pattern`` compiles and cannot backtrack catastrophically.

    Rejected: backreferences, lookarounds, conditionals, a repeated group that itself contains a repeat or an
    alternation (``(a+)+``, ``(a|ab)*``), more than two variable-length repeats and more than four ``?``.
    """
    import importlib

    if len(pattern) > MAX_KEY_PATTERN_LENGTH:
        raise ValueError(f"regex is longer than {MAX_KEY_PATTERN_LENGTH} characters")
    if _simple_key_pattern(pattern):
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    parser = importlib.import_module("re._parser")  # already loaded by re; no public API exposes the parse tree
    const = importlib.import_module("re._constants")
    repeats = {const.MAX_REPEAT, const.MIN_REPEAT, getattr(const, "POSSESSIVE_REPEAT", const.MAX_REPEAT)}
    forbidden = {
        const.GROUPREF: "backreferences are not allowed",
        const.GROUPREF_EXISTS: "conditional groups are not allowed",
        const.ASSERT: "lookarounds are not allowed",
        const.ASSERT_NOT: "lookarounds are not allowed",
    }
    variable = optional = 0

    def walk(items: Any, inside_repeat: bool) -> None:
        nonlocal variable, optional
        for op, av in items:
            if op in forbidden:
                raise ValueError(f"regex {pattern!r}: {forbidden[op]}")
            if op in repeats:
                lo, hi, sub = av
                if hi != lo:
                    if inside_repeat:
                        raise ValueError(f"regex {pattern!r}: nested quantifiers like (a+)+ are not allowed")
                    if hi > 1:
                        variable += 1
                    else:
                        optional += 1
                walk(sub, inside_repeat or hi > 1)
            elif op == const.BRANCH:
                if inside_repeat:
                    raise ValueError(f"regex {pattern!r}: alternation inside a repeated group is not allowed")
                for branch in av[1]:
                    walk(branch, inside_repeat)
            elif op == const.SUBPATTERN:
                walk(av[-1], inside_repeat)
            elif op == getattr(const, "ATOMIC_GROUP", None):
                walk(av, inside_repeat)

    walk(parser.parse(pattern), False)
    if variable > 2 or optional > 4:
        raise ValueError(f"regex {pattern!r}: at most two variable-length repeats (and four '?') are allowed")
