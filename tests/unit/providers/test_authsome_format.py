"""Provider files in authsome's own formats (0.2.x and 0.7.x), read here with authsome's meaning.

Small hand-written files in each format; ``tests/compat/test_provider_files.py`` runs every file of the real packages.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows import oauth
from authsome.flows.api_key import obtain_api_key
from authsome.flows.ui import PlainUI
from authsome.providers import Registry, parse_provider
from authsome.providers.registry import load_file, strip_comments
from authsome.providers.schema import PLACEHOLDER


def v02(**overrides: Any) -> dict[str, Any]:
    """An API-key provider as authsome 0.2.x writes it."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "name": "acme",
        "display_name": "Acme",
        "auth_type": "api_key",
        "flow": "api_key",
        "api_key": {"header_name": "Authorization", "header_prefix": "Bearer", "key_pattern_hint": "starts with ak-"},
        "host_url": "api.acme.test",
        "export": {"env": {"api_key": "ACME_API_KEY"}},
        "metadata": {},
    }
    data.update(overrides)
    return data


def v07(**overrides: Any) -> dict[str, Any]:
    """An OAuth provider as authsome 0.7.x writes it."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "name": "forge-app",
        "display_name": "Forge",
        "logo": "img.logo.dev/name/forge",
        "description": "Forge over OAuth.",
        "type": "app",
        "auth_type": "oauth2",
        "flow": "pkce",
        "api_url": ["api.forge.test", "https://forge.test/api/v2"],
        "oauth": {
            "authorization_url": "https://forge.test/oauth/authorize",
            "token_url": "https://forge.test/oauth/token",
            "revocation_url": None,
            "device_authorization_url": None,
            "scopes": ["read"],
            "pkce": True,
            "supports_device_code": False,
            "supports_dcr": False,
            "authorization_method": "basic",
            "_comment": "authsome's files carry comments like this one",
        },
        "export": {"FORGE_TOKEN": "ACCESS_TOKEN", "FORGE_URL": "api_url"},
        "docs_url": "https://forge.test/docs",
    }
    data.update(overrides)
    return data


def rejected(data: object) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse_provider(data)
    assert "\n" not in info.value.message and info.value.hint
    return info.value


# -- header_prefix ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "header"),
    [
        ({"header_prefix": "Bearer"}, ("Authorization", "Bearer k-1")),  # authsome: joined with one space
        ({"header_prefix": "Bearer "}, ("Authorization", "Bearer k-1")),  # this project's files: trailing space
        ({"header_prefix": "Token"}, ("Authorization", "Token k-1")),
        ({"header_prefix": ""}, ("Authorization", "k-1")),
        ({"header_prefix": None}, ("Authorization", "k-1")),  # 0.7.x: null = the bare key
        ({}, ("Authorization", "Bearer k-1")),  # absent = Bearer, in both formats
        ({"header_name": "X-Key", "header_prefix": "Basic"}, ("X-Key", "Basic k-1")),
    ],
)
def test_header_prefix_is_joined_with_one_space_unless_empty(api_key: dict[str, Any], header: tuple[str, str]) -> None:
    assert parse_provider(v02(api_key=api_key)).header("k-1") == header


@pytest.mark.parametrize(("mode", "pair"), [("username", "k-1:"), ("password", ":k-1")])
def test_basic_auth_sends_the_key_as_user_name_or_password(mode: str, pair: str) -> None:
    p = parse_provider(v02(api_key={"basic_auth": mode}))
    assert p.header("k-1") == ("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())


def test_basic_auth_refuses_another_prefix() -> None:
    assert (
        "api_key.header_prefix" in rejected(v02(api_key={"basic_auth": "username", "header_prefix": "Bearer"})).message
    )
    assert "api_key.basic_auth" in rejected(v02(api_key={"basic_auth": "both"})).message


# -- export ------------------------------------------------------------------------------------------------------


def test_export_env_in_authsome_direction_is_read() -> None:
    p = parse_provider(v02())
    assert p.export_env == {"ACME_API_KEY": "api_key"}
    assert p.placeholder_env() == {"ACME_API_KEY": PLACEHOLDER}


def test_both_directions_may_be_mixed() -> None:
    p = parse_provider(v02(export={"env": {"api_key": "ACME_API_KEY", "ACME_KEY": "api_key"}}))
    assert p.export_env == {"ACME_API_KEY": "api_key", "ACME_KEY": "api_key"}


@pytest.mark.parametrize(
    "export",
    [
        {"env": {"access_token": "FORGE_TOKEN", "refresh_token": "FORGE_REFRESH_TOKEN"}},  # 0.2.x
        {"env": {"FORGE_TOKEN": "access_token", "FORGE_REFRESH_TOKEN": "refresh_token"}},  # this project's direction
        {"FORGE_TOKEN": "ACCESS_TOKEN", "FORGE_REFRESH_TOKEN": "refresh_token"},  # flat
    ],
)
def test_a_refresh_token_entry_is_accepted_never_exported_and_noted_once(export: dict[str, Any]) -> None:
    p = parse_provider(v07(export=export))
    assert "FORGE_REFRESH_TOKEN" not in p.export_env and p.export_env["FORGE_TOKEN"] == "access_token"
    notes = [n for n in p.notes if "FORGE_REFRESH_TOKEN" in n]
    assert len(notes) == 1 and "refresh tokens are never exported" in notes[0]


def test_flat_export_sources_any_case_and_urls_are_not_placeholders() -> None:
    p = parse_provider(v07(export={"FORGE_TOKEN": "api_token", "FORGE_BASE": "BASE_URL", "FORGE_URL": "API_URL"}))
    assert p.export_env == {
        "FORGE_APP_ACCESS_TOKEN": "access_token",  # authsome's default name, exported as authsome does
        "FORGE_TOKEN": "access_token",
        "FORGE_BASE": "base_url",
        "FORGE_URL": "api_url",
    }
    assert p.placeholder_env() == dict.fromkeys(["FORGE_APP_ACCESS_TOKEN", "FORGE_TOKEN"], PLACEHOLDER)
    assert p.export_urls() == {"api_url": "https://api.forge.test"}
    based = parse_provider(v07(oauth={**v07()["oauth"], "base_url": "https://forge.test"}))
    assert based.export_urls() == {"base_url": "https://forge.test", "api_url": "https://api.forge.test"}


def test_default_variable_is_only_added_for_authsome_files() -> None:
    ours = parse_provider({"schema_version": 1, "name": "mine", "auth_type": "api_key", "api_key": {"env_var": "K"}})
    assert ours.export_env == {"K": "api_key"}
    theirs = parse_provider(v02(export=None, name="my-tool"))
    assert theirs.export_env == {"MY_TOOL_API_KEY": "api_key"}


@pytest.mark.parametrize(
    ("export", "message"),
    [
        ({"env": {"access_token": "X"}}, "export.env.access_token: must be 'api_key'"),
        ({"env": {"api_key": "not a var"}}, "export.env.api_key: 'not a var' is not a valid environment variable"),
        ({"X": "PASSWORD"}, "export.X: must be one of API_TOKEN, ACCESS_TOKEN, BASE_URL, API_URL"),
        ({"X": 3}, "export.X: must be one of"),
        ([], "export: must be a JSON object"),
    ],
)
def test_export_errors_name_the_field(export: object, message: str) -> None:
    assert message in rejected(v02(export=export)).message


def test_login_variables_are_env_var_then_export_variables() -> None:
    p = parse_provider(v02(api_key={"env_var": "ACME_KEY"}, export={"ACME_TOKEN": "API_TOKEN"}))
    assert p.key_variables == ("ACME_KEY", "ACME_API_KEY", "ACME_TOKEN")
    assert parse_provider(v02()).key_variables == ("ACME_API_KEY",)


def test_login_reads_the_key_from_an_export_variable_never_a_placeholder() -> None:
    prov = parse_provider(v02(api_key={"env_var": "ACME_KEY"}, export={"ACME_TOKEN": "API_TOKEN"}))
    env = {"ACME_KEY": PLACEHOLDER, "ACME_API_KEY": " ", "ACME_TOKEN": "ak-123"}
    cred = obtain_api_key(prov, env=env, stdin=None, ui=PlainUI(io.StringIO()), allow_browser=False)
    assert cred.api_key is not None and cred.api_key.reveal() == "ak-123"


def test_key_pattern_hint_is_the_hint_of_a_key_that_does_not_match() -> None:
    prov = parse_provider(v02(api_key={"key_pattern": "ak-[0-9]+", "key_pattern_hint": "Acme keys start with ak-"}))
    with pytest.raises(UsageError) as info:
        obtain_api_key(prov, env={"ACME_API_KEY": "sk-999"}, stdin=None, ui=PlainUI(io.StringIO()))
    assert info.value.hint == "Acme keys start with ak-" and "$ACME_API_KEY" in info.value.message
    assert "sk-999" not in str(info.value)


# -- fields authsome has -----------------------------------------------------------------------------------------


def test_descriptive_and_flag_fields_are_accepted() -> None:
    p = parse_provider(v07())
    assert p.docs == "https://forge.test/docs"
    assert p.flow == "pkce" and p.oauth is not None and p.oauth.revocation_url is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(colour="red"), "colour: unknown field"),
        (lambda d: d["oauth"].update(pkcee=True), "oauth.pkcee: unknown field"),
        (lambda d: d["oauth"].update(pkce="yes"), "oauth.pkce: must be true or false"),
        (lambda d: d["oauth"].update(authorization_method="header"), "oauth.authorization_method: 'header'"),
        (lambda d: d.update(type="robot"), "type: 'robot' is not valid"),
        (lambda d: d.update(metadata=[]), "metadata: must be a JSON object"),
        (lambda d: d.update(logo=5), "logo: must be a string"),
        (lambda d: d.update(api_url="api.forge.test:99999"), "api_url: host rule"),
        (lambda d: d.update(api_url=[]), "api_url: must be a string or a non-empty list"),
        (lambda d: d.update(api_url="http://api.forge.test"), "api_url: host rule"),
        (lambda d: d["oauth"].update(device_token_request="xml"), "oauth.device_token_request: 'xml'"),
        (lambda d: d["oauth"].update(authorization_params={"state": "x"}), "authorization_params.state: is not"),
        (lambda d: d["oauth"].update(authorization_params={"a": 1}), "authorization_params.a: must be a string"),
    ],
)
def test_anything_else_is_still_an_error_naming_the_field(mutate: Any, message: str) -> None:
    data = v07()
    mutate(data)
    assert message in rejected(data).message


def test_browser_providers_are_refused_with_the_reason() -> None:
    err = rejected({"name": "x-browser", "auth_type": "browser", "flow": "browser", "browser": {"entry_url": "x"}})
    assert err.message == "provider 'x-browser': auth_type: 'browser' (a browser-cookie provider) is not supported"
    assert "cookie database" in (err.hint or "")


def test_schema_version_defaults_to_1() -> None:
    data = v02()
    del data["schema_version"]
    assert parse_provider(data).schema_version == 1


def test_registration_block_and_device_json_are_understood() -> None:
    p = parse_provider(
        v07(
            flow="dcr_pkce",
            registration={"registration_endpoint": "https://forge.test/register"},
            oauth={**v07()["oauth"], "device_token_request": "json", "authorization_params": {"duration": "permanent"}},
        )
    )
    assert p.oauth is not None
    assert p.oauth.registration_endpoint == "https://forge.test/register"
    assert p.oauth.device_token_request == "json"
    assert p.oauth.authorization_params == (("duration", "permanent"),)
    assert "registration.registration_endpoint" in rejected(v07(registration={"registration_endpoint": 5})).message


def test_dcr_without_registration_endpoint_discovers_at_the_authorization_origin() -> None:
    p = parse_provider(v07(flow="dcr_pkce"))  # authsome looks for /.well-known/... at that origin
    assert p.oauth is not None and p.oauth.issuer == "https://forge.test"
    ours = {"schema_version": 1, "name": "x", "auth_type": "oauth2", "flow": "dcr_pkce",
            "oauth": {"authorization_url": "https://x.test/a", "token_url": "https://x.test/t"}}  # fmt: skip
    assert "oauth.registration_endpoint: is required" in rejected(ours).message


# -- host rules ----------------------------------------------------------------------------------------------------


def test_host_url_and_api_url_both_route() -> None:
    p = parse_provider(v07(host_url="old.forge.test"))  # 0.7.x itself silently drops an old host_url
    assert [r.raw for r in p.host_rules] == ["old.forge.test", "api.forge.test", "https://forge.test/api/v2"]


def test_broad_authsome_regex_is_narrowed_to_whole_labels_with_a_note() -> None:
    p = parse_provider(v07(api_url=["regex:.*forgeusercontent\\.test$"]))
    (rule,) = p.host_rules
    assert rule.matches("raw.forgeusercontent.test", 443, "/") and rule.matches("forgeusercontent.test", 443, "/")
    assert not rule.matches("evilforgeusercontent.test", 443, "/")
    assert p.notes == (
        r"api_url: 'regex:.*forgeusercontent\.test$' is used as 'regex:([a-z0-9-]+\.)*forgeusercontent\.test'"
        " (whole labels only)",
    )


def test_unsafe_authsome_regex_is_left_out_with_a_note_but_refused_in_this_projects_format() -> None:
    p = parse_provider(v02(host_url="regex:.*googleapis.*"))
    assert p.host_rules == () and "is not used, so those hosts get no credential" in p.notes[0]
    ours = {"schema_version": 1, "name": "g", "auth_type": "api_key", "host_url": "regex:.*googleapis.*"}
    assert "host_url: regex '.*googleapis.*'" in rejected(ours).message


# -- files: JSONC, register, user dir --------------------------------------------------------------------------------

JSONC = """// Acme
// auth: api_key | flow: api_key
{
  "name": "acme", /* inline */ "auth_type": "api_key", "flow": "api_key",
  "api_url": "https://api.acme.test/v1", // a comment with "quotes" and a URL https://x.test//y
  "export": {"ACME_API_KEY": "API_TOKEN"}, "description": "not // a comment"
}
"""


def test_strip_comments_keeps_strings_and_line_numbers() -> None:
    text = strip_comments(JSONC)
    assert text.count("\n") == JSONC.count("\n")
    assert json.loads(text)["description"] == "not // a comment"


def test_jsonc_error_points_at_the_right_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonc"
    path.write_text('// one\n// two\n{\n  "name": "bad",,\n}\n')
    with pytest.raises(UsageError, match="invalid JSON at line 4 "):
        load_file(path, source="user")


def test_register_a_jsonc_file_and_read_jsonc_from_the_user_dir(tmp_path: Path) -> None:
    source = tmp_path / "acme.jsonc"
    source.write_text(JSONC)
    reg = Registry(tmp_path / "providers")
    prov = reg.register(source)
    assert prov.path == tmp_path / "providers" / "acme.json" and prov.export_env == {"ACME_API_KEY": "api_key"}
    (tmp_path / "providers" / "acme.json").unlink()
    (tmp_path / "providers" / "acme.jsonc").write_text(JSONC)
    fresh = Registry(tmp_path / "providers")
    assert fresh.get("acme").source == "user" and fresh.problems() == []
    with pytest.raises(UsageError, match="already registered"):
        fresh.register(source)
    fresh.register(source, force=True)
    assert sorted(p.name for p in (tmp_path / "providers").iterdir()) == ["acme.json"]
    assert fresh.unregister("acme") and not fresh.is_user("acme")


def test_a_name_defined_twice_in_the_user_dir_is_a_problem(tmp_path: Path) -> None:
    user = tmp_path / "providers"
    user.mkdir()
    (user / "acme.json").write_text(json.dumps(v02()))
    (user / "acme.jsonc").write_text(JSONC)
    reg = Registry(user)
    assert reg.get("acme").path == user / "acme.json"
    ((path, reason),) = reg.problems()
    assert path == user / "acme.jsonc" and "already defined by" in reason
    assert reg.unregister("acme") and list(user.iterdir()) == []


# -- authorization_params reach the authorization request ------------------------------------------------------------


def test_authorization_params_are_sent_to_the_authorization_endpoint() -> None:
    prov = parse_provider(
        {
            "schema_version": 1,
            "name": "atl",
            "auth_type": "oauth2",
            "oauth": {
                "authorization_url": "https://auth.atl.test/authorize",
                "token_url": "https://auth.atl.test/oauth/token",
                "authorization_params": {"audience": "api.atl.test", "prompt": "consent"},
            },
            "client": {"client_id_env": "ATL_CLIENT_ID"},
        }
    )
    seen: dict[str, list[str]] = {}

    def browser(url: str) -> bool:  # the user denies access: the flow ends without a token request
        seen.update(parse_qs(urlsplit(url).query))
        callback = seen["redirect_uri"][0] + f"?state={seen['state'][0]}&error=access_denied"
        httpx.get(callback, timeout=5)
        return True

    ui = PlainUI(io.StringIO(), browser=browser)
    with pytest.raises(AuthenticationFailed, match="denied"):
        oauth.login(prov, client=None, ui=ui, env={"ATL_CLIENT_ID": "cid"}, redirect_port=0, secret_form=False)
    assert seen["audience"] == ["api.atl.test"] and seen["prompt"] == ["consent"]
    assert seen["client_id"] == ["cid"] and seen["code_challenge_method"] == ["S256"]
