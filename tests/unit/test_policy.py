from __future__ import annotations

from pathlib import Path

import pytest

from authsome.errors import UsageError
from authsome.policy import build_policy, parse_rule


def test_no_rules_allows_everything() -> None:
    assert build_policy().check("github", "default", "DELETE", "/repos/x").allowed


def test_method_and_glob_matching() -> None:
    policy = build_policy(["github:GET /repos/**", "openai:POST /v1/chat/*"])
    assert policy.check("github", "default", "GET", "/repos/octo/hello").allowed
    assert policy.check("github", "default", "get", "/repos").allowed
    assert not policy.check("github", "default", "DELETE", "/repos/octo/hello").allowed
    assert not policy.check("github", "default", "GET", "/user").allowed
    assert policy.check("openai", "default", "POST", "/v1/chat/completions").allowed
    assert not policy.check("openai", "default", "POST", "/v1/chat/completions/extra").allowed


def test_unlisted_provider_is_denied_by_default() -> None:
    decision = build_policy(["github:GET /repos/**"]).check("openai", "default", "GET", "/v1/models")
    assert not decision.allowed and "openai" in decision.reason


def test_connection_scoped_rule() -> None:
    policy = build_policy(["github/work:* /orgs/acme/**"])
    assert policy.check("github", "work", "POST", "/orgs/acme/repos").allowed
    assert not policy.check("github", "default", "POST", "/orgs/acme/repos").allowed


@pytest.mark.parametrize("path", ["/repos/../admin", "/repos/%2e%2e/admin", "/repos/a%2Fb", "/repos/./x"])
def test_traversal_tricks_are_refused(path: str) -> None:
    assert not build_policy(["github:GET /repos/**"]).check("github", "default", "GET", path).allowed


def test_query_string_is_ignored() -> None:
    assert build_policy(["github:GET /repos/**"]).check("github", "default", "GET", "/repos/x?per_page=5").allowed


@pytest.mark.parametrize("bad", ["github GET /x", "github:GET repos", "GitHub:GET /x", "github:GE T /x", ""])
def test_malformed_rules(bad: str) -> None:
    with pytest.raises(UsageError, match="malformed"):
        parse_rule(bad)


def test_policy_files(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text(
        'allow = ["github:GET /repos/**"]\n[[rule]]\nprovider = "openai"\nmethods = ["POST"]\npaths = ["/v1/chat/**"]\n'
    )
    policy = build_policy(policy_file=toml)
    assert policy.check("openai", "default", "POST", "/v1/chat/completions").allowed
    assert not policy.check("openai", "default", "GET", "/v1/models").allowed
    js = tmp_path / "p.json"
    js.write_text('{"allow": ["github:GET /user"]}')
    assert build_policy(policy_file=js).check("github", "default", "GET", "/user").allowed
    js.write_text('{"allow": [1]}')
    with pytest.raises(UsageError, match="strings"):
        build_policy(policy_file=js)
    js.write_text("{nope")
    with pytest.raises(UsageError, match="does not parse"):
        build_policy(policy_file=js)


@pytest.mark.parametrize("override", ["DELETE", "delete", " DELETE ", "GET, DELETE"])
def test_a_method_override_must_be_allowed_too(override: str) -> None:
    policy = build_policy(["github:GET,POST /repos/**"])
    decision = policy.check("github", "default", "POST", "/repos/x", [override])
    assert not decision.allowed
    assert decision.reason == "no rule allows DELETE /repos/x (asked for by a method-override header on POST)"


def test_an_allowed_override_passes_and_no_policy_ignores_it() -> None:
    assert (
        build_policy(["github:POST,DELETE /repos/**"])
        .check("github", "default", "POST", "/repos/x", ["DELETE"])
        .allowed
    )
    assert build_policy().check("github", "default", "POST", "/repos/x", ["DELETE"]).allowed


@pytest.mark.parametrize("override", ["DE LETE", "DELETE;x", "GET\r\nX: y"])
def test_an_override_that_is_not_a_method_is_refused(override: str) -> None:
    decision = build_policy(["github:* /repos/**"]).check("github", "default", "POST", "/repos/x", [override])
    assert not decision.allowed and "not a method" in decision.reason
