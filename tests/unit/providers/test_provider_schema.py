"""Provider JSON validation: what is accepted, what is rejected (with the message a user sees), and the helpers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from authsome.errors import UsageError
from authsome.providers import Provider, parse_provider
from authsome.providers.schema import PLACEHOLDER, check_key_pattern


def api_key_provider(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "name": "acme",
        "display_name": "Acme",
        "auth_type": "api_key",
        "flow": "api_key",
        "api_key": {"header_name": "X-Acme-Key", "header_prefix": "", "env_var": "ACME_API_KEY"},
        "host_url": ["api.acme.test", "https://acme.test/api"],
        "export": {"env": {"ACME_API_KEY": "api_key"}},
        "docs": "https://acme.test/docs",
    }
    data.update(overrides)
    return data


def oauth_provider(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "name": "forge",
        "display_name": "Forge",
        "auth_type": "oauth2",
        "flow": "pkce",
        "oauth": {
            "base_url": "https://forge.test",
            "authorization_url": "{base_url}/oauth/authorize",
            "token_url": "{base_url}/oauth/token",
            "revocation_url": "{base_url}/oauth/revoke",
            "userinfo_url": "{base_url}/api/user",
            "scopes": ["api", "read:user", "https://forge.test/auth/x"],
        },
        "client": {"client_id_env": "FORGE_CLIENT_ID", "client_secret_env": "FORGE_CLIENT_SECRET"},
        "host_url": "{base_url}/api",
        "export": {"env": {"FORGE_TOKEN": "access_token"}},
    }
    data.update(overrides)
    return data


def rejected(data: object, path: Path | None = None) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse_provider(data, path=path)
    err = info.value
    assert "\n" not in err.message and err.hint
    assert err.exit_code == 2
    return err


# -- accepted ---------------------------------------------------------------------------------------------------


def test_api_key_provider_parses() -> None:
    p = parse_provider(api_key_provider(), source="bundled")
    assert (p.name, p.auth_type, p.flow, p.source) == ("acme", "api_key", "api_key", "bundled")
    assert [r.raw for r in p.host_rules] == ["api.acme.test", "https://acme.test/api"]
    assert p.header("k-123") == ("X-Acme-Key", "k-123")
    assert p.export_env == {"ACME_API_KEY": "api_key"}
    assert p.placeholder_env() == {"ACME_API_KEY": PLACEHOLDER}
    assert p.oauth is None and p.oauth_hosts == frozenset()


def test_minimal_api_key_provider_gets_defaults() -> None:
    p = parse_provider({"schema_version": 1, "name": "tiny", "auth_type": "api_key", "api_key": {"env_var": "TINY"}})
    assert p.display_name == "tiny" and p.flow == "api_key" and p.host_rules == ()
    assert p.header("abc") == ("Authorization", "Bearer abc")
    assert p.export_env == {"TINY": "api_key"}


def test_oauth_provider_resolves_base_url() -> None:
    p = parse_provider(oauth_provider())
    assert p.oauth is not None
    assert p.oauth.token_url == "https://forge.test/oauth/token"
    assert p.oauth.scopes == ("api", "read:user", "https://forge.test/auth/x")
    assert p.host_rules[0].host == "forge.test" and p.host_rules[0].path_prefix == "/api"
    assert p.header("tok") == ("Authorization", "Bearer tok")
    assert p.client.client_id_env == "FORGE_CLIENT_ID"


def test_with_base_url_points_everything_at_a_self_hosted_instance() -> None:
    p = parse_provider(oauth_provider()).with_base_url("https://git.corp.example/")
    assert p.oauth is not None
    assert p.oauth.authorization_url == "https://git.corp.example/oauth/authorize"
    assert p.oauth.base_url == "https://git.corp.example"
    assert p.host_rules[0].host == "git.corp.example"
    assert p.oauth_hosts == frozenset({"git.corp.example"})
    assert p.to_dict()["oauth"]["token_url"] == "{base_url}/oauth/token"


def test_with_base_url_allows_loopback_http_for_tests() -> None:
    p = parse_provider(oauth_provider()).with_base_url("http://127.0.0.1:9000")
    assert p.oauth is not None and p.oauth.token_url == "http://127.0.0.1:9000/oauth/token"
    assert (p.host_rules[0].host, p.host_rules[0].port) == ("127.0.0.1", 9000)


def test_with_base_url_rejects_plain_http_elsewhere() -> None:
    with pytest.raises(UsageError, match="must use https://"):
        parse_provider(oauth_provider()).with_base_url("http://git.corp.example")


def test_oauth_endpoints_exclude_userinfo_and_cover_issuer_discovery() -> None:
    data = oauth_provider()
    data["oauth"]["issuer"] = "https://id.forge.test"
    p = parse_provider(data)
    assert p.oauth_hosts == frozenset({"forge.test", "id.forge.test"})
    assert p.is_oauth_endpoint("forge.test", 443, "/oauth/token")
    assert p.is_oauth_endpoint("forge.test", 443, "/oauth/token/?x=1")
    assert p.is_oauth_endpoint("id.forge.test", 443, "/.well-known/openid-configuration")
    assert not p.is_oauth_endpoint("forge.test", 443, "/api/user")
    assert not p.is_oauth_endpoint("forge.test", 443, "/api/projects")
    assert not p.is_oauth_endpoint("forge.test", 8443, "/oauth/token")


def test_oauth2_provider_may_override_the_header() -> None:
    p = parse_provider(oauth_provider(api_key={"header_name": "PRIVATE-TOKEN", "header_prefix": ""}))
    assert p.header("tok") == ("PRIVATE-TOKEN", "tok")


@pytest.mark.parametrize("make", [api_key_provider, oauth_provider])
def test_round_trip_through_to_dict(make: Any) -> None:
    p = parse_provider(make(), path=Path("/x/y.json"))
    again = parse_provider(p.to_dict(), path=Path("/x/y.json"))
    assert again == p
    assert again.to_dict() == p.to_dict()


def test_to_dict_is_a_copy() -> None:
    p = parse_provider(api_key_provider())
    p.to_dict()["api_key"]["header_name"] = "changed"
    assert p.to_dict()["api_key"]["header_name"] == "X-Acme-Key"


def test_caller_mutation_does_not_change_a_parsed_provider() -> None:
    data = api_key_provider()
    p = parse_provider(data)
    data["api_key"]["header_name"] = "Evil"
    assert p.to_dict()["api_key"]["header_name"] == "X-Acme-Key"


def test_header_refuses_control_characters_in_the_secret() -> None:
    p = parse_provider(api_key_provider())
    with pytest.raises(UsageError, match="control characters") as info:
        p.header("abc\r\nX-Injected: 1")
    assert "X-Injected" not in str(info.value)


def test_dcr_provider_needs_only_an_issuer() -> None:
    p = parse_provider(
        {
            "schema_version": 1,
            "name": "mcp-thing",
            "auth_type": "oauth2",
            "flow": "dcr_pkce",
            "oauth": {"issuer": "https://mcp.thing.test"},
            "host_url": "mcp.thing.test",
        }
    )
    assert p.flow == "dcr_pkce" and p.export_env == {}
    assert p.is_oauth_endpoint("mcp.thing.test", 443, "/.well-known/oauth-authorization-server")
    assert not p.is_oauth_endpoint("mcp.thing.test", 443, "/mcp")


# -- rejected ---------------------------------------------------------------------------------------------------


def test_error_names_the_file_and_field(tmp_path: Path) -> None:
    err = rejected(api_key_provider(host_url="http://api.acme.test"), path=tmp_path / "acme.json")
    assert err.message.startswith(f"provider file {tmp_path / 'acme.json'}: host_url:")
    assert "only https://" in err.message
    assert "authsome inspect" in (err.hint or "")  # a command a pip-installed user has, not a file of this repo


def test_error_names_the_provider_without_a_file() -> None:
    err = rejected(api_key_provider(docs=5))
    assert err.message == "provider 'acme': docs: must be a string, not a number"


MUTATIONS: list[tuple[str, Any, str]] = [
    ("top-level unknown field", lambda d: d.update(colour="red"), "colour: unknown field"),
    ("nested unknown field", lambda d: d["api_key"].update(header="x"), "api_key.header: unknown field"),
    ("not an object", lambda d: d.update(api_key=["x"]), "api_key: must be a JSON object, not a list"),
    ("schema_version", lambda d: d.update(schema_version=2), "schema_version: must be 1, not 2"),
    ("schema_version bool", lambda d: d.update(schema_version=True), "schema_version: must be 1"),
    ("missing name", lambda d: d.pop("name"), "name: is required"),
    ("name type", lambda d: d.update(name=3), "name: must be a string, not a number"),
    ("unsafe name", lambda d: d.update(name="../etc"), "name: invalid name '../etc'"),
    ("upper-case name", lambda d: d.update(name="Acme"), "name: invalid name 'Acme'"),
    ("display name control", lambda d: d.update(display_name="A\x1b[31m"), "display_name: must be"),
    ("auth_type", lambda d: d.update(auth_type="basic"), "auth_type: 'basic' is not valid"),
    ("flow mismatch", lambda d: d.update(flow="pkce"), "flow: 'pkce' is not valid for an api_key provider"),
    ("oauth on api_key", lambda d: d.update(oauth={"token_url": "https://a.test/t"}), "oauth: is only allowed"),
    ("client on api_key", lambda d: d.update(client={"client_id_env": "X"}), "client: is only allowed"),
    ("header name space", lambda d: d["api_key"].update(header_name="X Key"), "not a valid HTTP header name"),
    ("header name colon", lambda d: d["api_key"].update(header_name="X:Key"), "not a valid HTTP header name"),
    ("header name crlf", lambda d: d["api_key"].update(header_name="X\r\nY"), "not a valid HTTP header name"),
    ("proxy header", lambda d: d["api_key"].update(header_name="Proxy-Authorization"), "cannot carry a credential"),
    ("host header", lambda d: d["api_key"].update(header_name="Host"), "cannot carry a credential"),
    ("prefix newline", lambda d: d["api_key"].update(header_prefix="Bearer\n"), "header_prefix: must be printable"),
    ("prefix nul", lambda d: d["api_key"].update(header_prefix="\x00"), "header_prefix: must be printable"),
    ("env var name", lambda d: d["api_key"].update(env_var="1BAD"), "env_var: '1BAD' is not a valid"),
    ("key pattern syntax", lambda d: d["api_key"].update(key_pattern="sk-("), "key_pattern: invalid regex"),
    ("key pattern backref", lambda d: d["api_key"].update(key_pattern=r"(a)\1"), "backreferences"),
    ("key pattern lookahead", lambda d: d["api_key"].update(key_pattern="(?=sk)s.*"), "lookarounds"),
    ("host_url type", lambda d: d.update(host_url=5), "host_url: must be a string or a non-empty list"),
    ("host_url empty list", lambda d: d.update(host_url=[]), "host_url: must be a string or a non-empty list"),
    ("host_url broad regex", lambda d: d.update(host_url="regex:.*"), "host_url: regex '.*'"),
    ("host_url googleapis", lambda d: d.update(host_url="regex:.*googleapis.*"), "'.' matches any character"),
    ("host_url bad port", lambda d: d.update(host_url="api.acme.test:70000"), "port must be"),
    ("export env name", lambda d: d.update(export={"env": {"A-B": "api_key"}}), "'A-B' is not a valid"),
    ("export kind", lambda d: d.update(export={"env": {"A": "password"}}), "export.env.A: must be 'api_key'"),
    ("export wrong credential", lambda d: d.update(export={"env": {"access_token": "A"}}), "must be 'api_key'"),
    ("export flat source", lambda d: d.update(export={"vars": {}}), "export.vars: must be one of API_TOKEN"),
    ("export flat name", lambda d: d.update(export={"A-B": "API_TOKEN"}), "export.A-B: is not a valid"),
    ("docs control", lambda d: d.update(docs="see\x07"), "docs: must be at most"),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in MUTATIONS], ids=[i for i, _, _ in MUTATIONS])
def test_api_key_provider_rejections(mutate: Any, expected: str) -> None:
    data = api_key_provider()
    mutate(data)
    assert expected in rejected(data).message


def _oauth(**fields: Any) -> Any:
    return lambda d: d["oauth"].update(fields)


OAUTH_MUTATIONS: list[tuple[str, Any, str]] = [
    ("no oauth block", lambda d: d.pop("oauth"), "oauth: is required for an oauth2 provider"),
    ("flow api_key", lambda d: d.update(flow="api_key"), "flow: 'api_key' is not valid for an oauth2 provider"),
    ("no token url", lambda d: d["oauth"].pop("token_url"), "oauth.token_url: is required"),
    ("pkce without auth url", lambda d: d["oauth"].pop("authorization_url"), "oauth.authorization_url: is required"),
    ("device without url", lambda d: d.update(flow="device_code"), "oauth.device_authorization_url: is required"),
    ("dcr without endpoint", lambda d: d.update(flow="dcr_pkce"), "oauth.registration_endpoint: is required"),
    ("http url", _oauth(token_url="http://forge.test/t"), "oauth.token_url: 'http://forge.test/t' must use https"),
    ("ftp url", _oauth(token_url="ftp://forge.test/t"), "oauth.token_url: 'ftp://forge.test/t' is not a valid"),
    ("relative url", _oauth(token_url="/oauth/token"), "is not a valid https:// URL"),
    ("url with space", _oauth(token_url="https://forge.test/a b"), "is not a valid https:// URL"),
    ("url userinfo", _oauth(token_url="https://u@forge.test/t"), "is not a valid https:// URL"),
    ("url bad host", _oauth(token_url="https://forge..test/t"), "has an invalid host"),
    ("url bad port", _oauth(token_url="https://forge.test:0/t"), "has an invalid port"),
    ("unknown placeholder", _oauth(token_url="https://forge.test/{tenant}/t"), "is not a valid https:// URL"),
    ("placeholder middle", _oauth(token_url="https://x/{base_url}"), "may only appear once, at the start"),
    ("no base url", lambda d: d["oauth"].pop("base_url"), "oauth.base_url: is required because"),
    ("base url http", _oauth(base_url="http://forge.test"), "oauth.base_url: 'http://forge.test' must use https"),
    ("scopes type", _oauth(scopes="api read"), "oauth.scopes: must be a list"),
    ("scope with space", _oauth(scopes=["api read"]), "oauth.scopes: must be a list"),
    ("scope empty", _oauth(scopes=[""]), "oauth.scopes: must be a list"),
    ("client env", lambda d: d["client"].update(client_id_env="my id"), "client.client_id_env: 'my id' is not"),
    ("client secret value", lambda d: d["client"].update(client_secret="s3cr3t"), "client.client_secret: unknown"),
    ("export api_key", lambda d: d.update(export={"env": {"T": "api_key"}}), "must be 'access_token'"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in OAUTH_MUTATIONS], ids=[i for i, _, _ in OAUTH_MUTATIONS]
)
def test_oauth_provider_rejections(mutate: Any, expected: str) -> None:
    data = copy.deepcopy(oauth_provider())
    mutate(data)
    assert expected in rejected(data).message


def test_secret_values_never_echoed_in_client_errors() -> None:
    data = oauth_provider()
    data["client"]["client_secret"] = "s3cr3t-value"
    assert "s3cr3t-value" not in str(rejected(data))


@pytest.mark.parametrize("data", [None, [], "x", 3])
def test_non_object_definitions_rejected(data: object) -> None:
    assert "must be a JSON object" in rejected(data).message


def test_allows_loopback_http_urls_only() -> None:
    for host in ("127.0.0.1:9000", "localhost", "[::1]:8080"):
        data = oauth_provider()
        data["oauth"]["token_url"] = f"http://{host}/token"
        assert isinstance(parse_provider(data), Provider)


@pytest.mark.parametrize(
    "pattern",
    [r"sk-[A-Za-z0-9_-]+", r"(sk|rk)_(test|live)_[A-Za-z0-9]+", r"[0-9a-f]{8}-[0-9a-f]{4}", r"^sk-ant-\S+$"],
)
def test_reasonable_key_patterns_accepted(pattern: str) -> None:
    check_key_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[z-a]+", "invalid regex"),
        ("a{3,1}", "invalid regex"),
        (r"(a)\1", "backreferences"),
        ("(?=sk)sk.*", "lookarounds"),
        ("x" * 300, "longer than"),
    ],
)
def test_unsafe_key_patterns_rejected(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_key_pattern(pattern)


def test_a_key_pattern_that_would_backtrack_in_python_is_accepted_and_matched_in_linear_time() -> None:
    """`(a+)+$` takes Python's `re` 2**n steps on a near miss; RE2 answers at once, so such a pattern is fine."""
    from authsome.providers.key_pattern import check_key_pattern, key_matches

    check_key_pattern("(a+)+$")
    assert not key_matches("(a+)+$", "a" * 60 + "!")  # with `re.fullmatch` this would not return in a lifetime
    assert key_matches("sk-[A-Za-z0-9]{8}", "sk-abcdEF12")
