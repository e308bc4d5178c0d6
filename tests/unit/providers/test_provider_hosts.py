"""Host canonicalisation, host_url parsing and matching, and what a regex: rule may claim (matched with RE2)."""

from __future__ import annotations

import time

import pytest

from authsome.providers.hosts import canonical_host, compile_host_pattern, narrow_host_pattern, parse_host_rule

GOOGLE = r"regex:^([a-z0-9-]+\.)*googleapis\.com$"


# -- canonical_host ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("API.OpenAI.com", "api.openai.com"),
        ("api.openai.com.", "api.openai.com"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("bücher.example.", "xn--bcher-kva.example"),
        ("[::1]", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_canonical_host(given: str, canonical: str) -> None:
    assert canonical_host(given) == canonical


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("a..b", "invalid host"),
        (".a.com", "invalid host"),
        ("a.com..", "invalid host"),
        ("exa mple.com", "invalid host"),
        ("a/b.com", "invalid host"),
        ("-a.com", "invalid host"),
        ("a" * 64 + ".com", "invalid host"),
        (("a" * 60 + ".") * 5 + "com", "longer than 253"),
        ("[::1", "invalid host"),
        ("[zz::1]", "invalid host"),
    ],
)
def test_canonical_host_rejects(bad: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        canonical_host(bad)


# -- exact rules -------------------------------------------------------------------------------------------------


def test_plain_host_rule_defaults_to_port_443_and_any_path() -> None:
    rule = parse_host_rule("API.Example.com.")
    assert (rule.kind, rule.host, rule.port, rule.path_prefix) == ("exact", "api.example.com", 443, "")
    assert rule.matches("api.example.com", 443, "/anything?x=1")
    assert not rule.matches("api.example.com", 8443, "/")
    assert not rule.matches("www.example.com", 443, "/")
    assert not rule.matches("api.example.com.evil.com", 443, "/")


def test_host_rule_with_port() -> None:
    rule = parse_host_rule("api.example.com:8443")
    assert rule.port == 8443
    assert rule.matches("api.example.com", 8443, "/")
    assert not rule.matches("api.example.com", 443, "/")


def test_path_prefix_matches_on_segment_boundary() -> None:
    rule = parse_host_rule("https://api.example.com/v1/")
    assert rule.path_prefix == "/v1"
    assert rule.matches("api.example.com", 443, "/v1")
    assert rule.matches("api.example.com", 443, "/v1/chat")
    assert rule.matches("api.example.com", 443, "/v1?stream=true")
    assert not rule.matches("api.example.com", 443, "/v10")
    assert not rule.matches("api.example.com", 443, "/")
    assert not rule.matches("api.example.com", 443, "/v2/v1")


@pytest.mark.parametrize("path", ["/v1/../admin", "/v1/./x/../../admin", "/v1/%2e%2e/admin", "/v1%2fx", "/v1/..\\a"])
def test_path_prefix_never_matches_dot_segments(path: str) -> None:
    assert not parse_host_rule("https://api.example.com/v1").matches("api.example.com", 443, path)


def test_url_rule_with_port_and_ipv6() -> None:
    rule = parse_host_rule("https://[::1]:8443/api")
    assert (rule.host, rule.port, rule.path_prefix) == ("::1", 8443, "/api")


def test_rank_exact_beats_regex_and_longer_prefix_wins() -> None:
    regex = parse_host_rule(GOOGLE)
    host = parse_host_rule("www.googleapis.com")
    short = parse_host_rule("https://www.googleapis.com/v1")
    long = parse_host_rule("https://www.googleapis.com/v1/files")
    assert regex.rank < host.rank < short.rank < long.rank


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "non-empty"),
        ("http://api.example.com", "only https://"),
        ("ftp://api.example.com", "only https://"),
        ("api.example.com/v1", "URL form"),
        ("https://user@api.example.com", "user info"),
        ("https://api.example.com/v1?x=1", "query"),
        ("api.example.com:0", "port must be"),
        ("api.example.com:99999", "port must be"),
        ("api.example.com:http", "port must be"),
        ("*.example.com", "wildcards are not supported"),
        ("api example.com", "whitespace"),
        ("api.example.com\r\nx", "control"),
        ("https://api.example.com/v1/../x", "invalid path prefix"),
        ("https://api.example.com//v1", "invalid path prefix"),
    ],
)
def test_bad_host_rules_rejected_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_host_rule(text)


# -- regex rules -------------------------------------------------------------------------------------------------


def test_google_pattern_is_accepted_and_anchored() -> None:
    rule = parse_host_rule(GOOGLE)
    assert rule.kind == "regex" and rule.port == 443
    assert rule.matches("www.googleapis.com", 443, "/")
    assert rule.matches("storage.googleapis.com", 443, "/b")
    assert rule.matches("a.b-c.googleapis.com", 443, "/")
    assert rule.matches("googleapis.com", 443, "/")
    assert not rule.matches("googleapis.com.evil.com", 443, "/")
    assert not rule.matches("evilgoogleapis.com", 443, "/")
    assert not rule.matches("www.googleapis.com", 80, "/")


@pytest.mark.parametrize(
    "pattern",
    [
        r"[a-z]{2}[0-9]{1,3}\.api\.mailchimp\.com",
        r"^(eu|us)\.api\.example\.com$",
        r"(?:[a-z0-9-]+\.)?api\.example\.com",
        r"[a-z0-9-]+\.svc\.[a-z0-9-]+\.pinecone\.io",
        r"api\.example\.com",
        r"^([a-z\d-]{1,63}\.)+example\.co\.uk$",
    ],
)
def test_safe_patterns_accepted(pattern: str) -> None:
    assert parse_host_rule("regex:" + pattern).pattern is not None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (".*", "'.' matches any character"),
        (".*googleapis.*", "'.' matches any character"),
        (r".+\.com", "'.' matches any character"),
        (r"[a-z]+\.com", "at least two whole labels"),
        (r"[a-z0-9-]*googleapis\.com", "at least two whole labels"),
        (r"([a-z]+\.)*com", "at least two whole labels"),
        (r"([a-z]+\.)\1example\.com", "backreferences"),
        (r"(?P<x>a)(?P=x)\.example\.com", "backreferences"),
        (r"(?=api)[a-z]+\.example\.com", "lookarounds"),
        (r"(?<!x)api\.example\.com", "lookarounds"),
        (r"api|evil\.example\.com", "alternation"),
        (r"API\.example\.com", "lowercase"),
        (r"[A-Z]+\.example\.com", "lowercase"),
        (r"[a-z]+\.github\.io", "public suffix"),
        (r"[a-z]+\.co\.uk", "public suffix"),
        (r"x([a-z]+\.)*example\.com", "at least two whole labels"),  # matches xexample.com
        (r"([a-z]+\.|x){2}example\.com", "at least two whole labels"),  # matches a.xexample.com
        (r"[a-z]+\.example\.c\x00m", "at least two whole labels"),
        ("", "empty pattern"),
        ("a" * 300 + r"\.example\.com", "longer than"),
    ],
)
def test_unsafe_patterns_rejected(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_host_rule("regex:" + pattern)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"([a-z]+\.\.example\.com", r"missing \)"),
        (r"[a-z]{1,1001}\.example\.com", "invalid repetition size"),
        (r"\pL+\.example\.com", r"bad escape \\p"),  # RE2 reads it, Python's parser (which checks scope) does not
        (r"[[:alpha:]]+\.example\.com", "nested set"),  # the two engines read this differently
    ],
)
def test_a_pattern_the_engines_cannot_read_alike_is_refused_naming_it(
    pattern: str, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        parse_host_rule("regex:" + pattern)
    assert str(info.value).startswith(f"regex {pattern!r}: ")
    assert capfd.readouterr() == ("", "")  # RE2 logs nothing of its own


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+\.example\.com",
        r"([a-z]+)+\.example\.com",
        r"[a-z]+[0-9]+\.example\.com",
        r"([a-z]+\.)*([a-z]+\.)*example\.com",
        r"[^.]+\.example\.com",
        r"[a-z.]+\.example\.com",
        r"(api|x\.y)\.example\.com",
        r"(eu|us)+\.example\.com",
        r"[a-z]+?\.example\.com",
        r"\w+\.example\.com",
        r"(a|aa)*b?\.example\.com",
    ],
)
def test_patterns_refused_only_for_backtracking_are_accepted_and_cannot_stall(pattern: str) -> None:
    rule = parse_host_rule("regex:" + pattern)
    hostile = "a" * 60 + ".example.co"  # Python's re would try 2**60 ways to split the a's for (a+)+
    start = time.perf_counter()
    for _ in range(100):
        assert not rule.matches(hostile, 443, "/")
    assert time.perf_counter() - start < 1.0
    assert not rule.matches("example.com.evil.test", 443, "/")


def test_accepted_pattern_cannot_stall_on_hostile_input() -> None:
    rule = parse_host_rule(r"regex:^([a-z0-9-]{1,63}\.)+svc\.example\.com$")
    hostile = ("a-" * 30 + "a.") * 4 + "svc.example.co"
    start = time.perf_counter()
    for _ in range(100):
        assert not rule.matches(hostile, 443, "/")
    assert time.perf_counter() - start < 1.0


def test_regex_rule_refuses_overlong_host() -> None:
    rule = parse_host_rule(GOOGLE)
    assert not rule.matches("a." * 130 + "googleapis.com", 443, "/")


@pytest.mark.parametrize(
    ("pattern", "narrowed"),
    [
        (r".*githubusercontent\.com$", r"([a-z0-9-]+\.)*githubusercontent\.com"),
        (r"^.*\.linear\.app$", r"([a-z0-9-]+\.)+linear\.app"),
        (r".+\.acme\.com", r"([a-z0-9-]+\.)+acme\.com"),
        (r".+acme\.com", r"([a-z0-9-]+\.)+acme\.com"),
        (".*googleapis.*", None),  # names no domain
        (r".*\.com", None),  # a public suffix alone
        (r"api\.acme\.com", None),  # not a leading wildcard
        (".*", None),
    ],
)
def test_narrow_host_pattern(pattern: str, narrowed: str | None) -> None:
    assert narrow_host_pattern(pattern) == narrowed


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        ("raw.githubusercontent.com", True),
        ("githubusercontent.com", True),
        ("a.b.githubusercontent.com", True),
        ("evilgithubusercontent.com", False),  # the original '.*' matched this one
        ("githubusercontent.com.evil.net", False),
        ("x-githubusercontent.com", False),
    ],
)
def test_a_narrowed_pattern_matches_a_subset_of_the_original(host: str, matches: bool) -> None:
    import re

    narrowed = narrow_host_pattern(r".*githubusercontent\.com$")
    assert narrowed is not None
    assert bool(compile_host_pattern(narrowed).fullmatch(host)) is matches
    if matches:
        assert re.fullmatch(r".*githubusercontent\.com", host)
