"""Router: which provider's credential a request gets, and which tunnels must be decrypted at all."""

from __future__ import annotations

import time

import pytest

from authsome.errors import UsageError
from authsome.proxy.routing import Ambiguous, Match, NoMatch, Route, Router

from .conftest import make_provider

OPENAI = make_provider("openai", "api.openai.com")
GITHUB = make_provider("github", ["api.github.com", "uploads.github.com"])


def router(*routes: Route) -> Router:
    return Router(routes)


def test_exact_host_routes_to_its_provider_and_connection() -> None:
    r = router(Route(OPENAI), Route(GITHUB, "work"))
    assert r.route("https", "api.openai.com", 443, "/v1/models") == Match("openai", "default", "api.openai.com")
    assert r.route("https", "uploads.github.com", 443, "/x") == Match("github", "work", "uploads.github.com")


@pytest.mark.parametrize("host", ["API.OpenAI.COM", "api.openai.com.", "Api.OpenAI.com."])
def test_host_comparison_is_canonical(host: str) -> None:
    assert isinstance(router(Route(OPENAI)).route("https", host, 443, "/"), Match)


def test_idna_host_rule_matches_the_unicode_form() -> None:
    bucher = make_provider("bucher", "api.bücher.example")
    r = router(Route(bucher))
    assert isinstance(r.route("https", "API.BÜCHER.example", 443, "/"), Match)
    assert isinstance(r.route("https", "api.xn--bcher-kva.example", 443, "/"), Match)


def test_plain_http_never_gets_a_credential() -> None:
    assert router(Route(OPENAI)).route("http", "api.openai.com", 443, "/") == NoMatch("plain-http")


def test_port_must_match_the_rule() -> None:
    r = router(Route(OPENAI), Route(make_provider("acme", "api.acme.test:8443")))
    assert r.route("https", "api.openai.com", 8443, "/") == NoMatch("no-route")
    assert r.route("https", "api.acme.test", 443, "/") == NoMatch("no-route")
    assert isinstance(r.route("https", "api.acme.test", 8443, "/"), Match)


def test_unrelated_and_lookalike_hosts_do_not_match() -> None:
    r = router(Route(OPENAI))
    for host in ("openai.com", "api.openai.com.evil.test", "xapi.openai.com", "evil.test"):
        assert r.route("https", host, 443, "/") == NoMatch("no-route"), host


def test_exact_beats_regex() -> None:
    wide = make_provider("wide", r"regex:^([a-z0-9-]+\.)*github\.com$")
    r = router(Route(wide), Route(GITHUB))
    assert r.route("https", "api.github.com", 443, "/").provider == "github"  # type: ignore[union-attr]
    assert r.route("https", "gist.github.com", 443, "/").provider == "wide"  # type: ignore[union-attr]


def test_longest_path_prefix_wins_and_respects_segments() -> None:
    base = make_provider("base", "api.acme.test")
    v2 = make_provider("v2", "https://api.acme.test/v2")
    r = router(Route(base), Route(v2))
    assert r.route("https", "api.acme.test", 443, "/v2/items?x=1").provider == "v2"  # type: ignore[union-attr]
    assert r.route("https", "api.acme.test", 443, "/v2").provider == "v2"  # type: ignore[union-attr]
    assert r.route("https", "api.acme.test", 443, "/v2x").provider == "base"  # type: ignore[union-attr]
    assert r.route("https", "api.acme.test", 443, "/v1").provider == "base"  # type: ignore[union-attr]


def test_equal_rank_is_ambiguous_and_says_who() -> None:
    twin = make_provider("twin", "api.openai.com")
    decision = router(Route(OPENAI), Route(twin)).route("https", "api.openai.com", 443, "/v1")
    assert decision == Ambiguous("api.openai.com", ("openai", "twin"))
    assert isinstance(decision, Ambiguous)
    assert decision.message == "ambiguous host match: api.openai.com claimed by openai, twin"


def test_two_regexes_claiming_a_host_are_ambiguous() -> None:
    a = make_provider("a", r"regex:^api[0-9]+\.acme\.test$")
    b = make_provider("b", r"regex:^api\d\.acme\.test$")
    r = router(Route(a), Route(b))
    assert r.route("https", "api1.acme.test", 443, "/") == Ambiguous("api1.acme.test", ("a", "b"))
    assert r.route("https", "api12.acme.test", 443, "/").provider == "a"  # type: ignore[union-attr]


def test_oauth_endpoints_on_the_api_host_get_no_credential() -> None:
    slack = make_provider(
        "slack",
        "https://slack.com/api",
        oauth={
            "authorization_url": "https://slack.com/oauth/v2/authorize",
            "token_url": "https://slack.com/api/oauth.v2.access",
            "revocation_url": "https://slack.com/api/auth.revoke",
        },
    )
    r = router(Route(slack))
    assert r.route("https", "slack.com", 443, "/api/oauth.v2.access") == NoMatch("oauth-endpoint")
    assert r.route("https", "Slack.com.", 443, "/api/auth.revoke?x=1") == NoMatch("oauth-endpoint")
    assert isinstance(r.route("https", "slack.com", 443, "/api/chat.postMessage"), Match)


def test_another_providers_oauth_endpoint_gets_nothing_either() -> None:
    idp = make_provider(
        "idp",
        "api.idp.test",
        oauth={"authorization_url": "https://api.acme.test/authorize", "token_url": "https://api.acme.test/token"},
    )
    acme = make_provider("acme", "api.acme.test")
    assert router(Route(idp), Route(acme)).route("https", "api.acme.test", 443, "/token") == NoMatch("oauth-endpoint")


def test_malformed_host_is_no_match() -> None:
    assert router(Route(OPENAI)).route("https", "bad host", 443, "/") == NoMatch("bad-host")


def test_intercepts_only_hosts_a_rule_could_match() -> None:
    regex = make_provider("acme", r"regex:^api[0-9]+\.acme\.test$")
    prefixed = make_provider("slack", "https://slack.com/api")
    r = router(Route(OPENAI), Route(regex), Route(prefixed))
    assert r.intercepts("API.openai.com.", 443)
    assert r.intercepts("api7.acme.test", 443)
    assert r.intercepts("slack.com", 443)
    assert not r.intercepts("api.openai.com", 8443)
    assert not r.intercepts("example.com", 443)
    assert not r.intercepts("api.acme.test", 443)
    assert not r.intercepts("not a host", 443)


def test_same_provider_twice_is_refused_before_anything_starts() -> None:
    with pytest.raises(UsageError, match="routed twice") as info:
        Router([Route(OPENAI), Route(OPENAI, "work")])
    assert "--connection" in (info.value.hint or "")


def test_provider_without_host_rules_is_reported_unroutable() -> None:
    bare = make_provider("bare", "api.bare.test")
    bare = type(bare)(**{**bare.__dict__, "host_rules": ()})
    r = router(Route(OPENAI), Route(bare))
    assert r.unroutable() == ("bare",)
    assert r.providers == ("openai", "bare")


def test_routing_a_hostile_host_stays_fast() -> None:
    google = make_provider("google", r"regex:^([a-z0-9-]+\.)*googleapis\.com$")
    r = router(Route(google))
    host = ("a" * 60 + ".") * 3 + "googleapis.co"
    start = time.perf_counter()
    for _ in range(200):
        assert r.route("https", host, 443, "/") == NoMatch("no-route")
        assert not r.intercepts(host + "m.x", 443)
    assert time.perf_counter() - start < 1.0
