"""Every bundled provider file loads, validates, round-trips, and the set as a whole is unambiguous."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from authsome.providers import Provider, parse_provider
from authsome.providers.registry import BUNDLED_DIR, bundled, load_file

FILES = sorted(BUNDLED_DIR.glob("*.json"))
REQUIRED = [
    "openai",
    "anthropic",
    "github",
    "gitlab",
    "google",
    "microsoft",
    "slack",
    "notion",
    "linear",
    "stripe",
    "resend",
    "sendgrid",
    "postmark",
    "mailchimp",
    "hubspot",
    "atlassian",
    "discord",
    "x",
    "zapier",
    "tavily",
    "serpapi",
    "perplexity",
    "mistral",
    "groq",
    "cohere",
    "together",
    "deepseek",
    "openrouter",
    "huggingface",
    "replicate",
    "elevenlabs",
    "firecrawl",
    "brave-search",
    "exa",
    "pinecone",
    "airtable",
    "asana",
    "calendly",
    "typeform",
    "intercom",
    "klaviyo",
    "brevo",
    "cloudflare",
    "vercel",
    "supabase",
]


def test_at_least_45_providers_including_the_required_ones() -> None:
    assert len(FILES) >= 45
    assert set(REQUIRED) <= set(bundled())


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bundled_file_is_valid(path: Path) -> None:
    prov = load_file(path, source="bundled")
    assert prov.name == path.stem
    assert prov.docs, "every bundled provider links its documentation"
    assert prov.host_rules, "every bundled provider names the hosts it authenticates to"
    again = parse_provider(prov.to_dict(), source="bundled", path=path)
    assert again == prov
    assert json.loads(path.read_text()) == prov.to_dict()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bundled_file_has_no_client_secret_or_id(path: Path) -> None:
    text = path.read_text()
    assert '"client_secret"' not in text and '"client_id"' not in text
    data = json.loads(path.read_text())
    for value in (data.get("client") or {}).values():
        assert value.isupper() and value.endswith(("_CLIENT_ID", "_CLIENT_SECRET"))


def _exact_keys(provs: list[Provider]) -> Counter[tuple[str | None, int, str]]:
    return Counter((r.host, r.port, r.path_prefix) for p in provs for r in p.host_rules if r.kind == "exact")


def test_no_two_bundled_providers_claim_the_same_exact_rule() -> None:
    counts = _exact_keys(list(bundled().values()))
    assert [k for k, n in counts.items() if n > 1] == []


REGEX_SAMPLES = ["www.googleapis.com", "us21.api.mailchimp.com", "idx-1.svc.us-east1-gcp.pinecone.io", "de.sentry.io"]


def test_no_host_is_claimed_by_two_bundled_regexes() -> None:
    """A regex may overlap an exact rule (the exact one outranks it), never another provider's regex."""
    provs = list(bundled().values())
    regexes = [(p.name, r) for p in provs for r in p.host_rules if r.kind == "regex"]
    assert len(regexes) >= 3
    samples = REGEX_SAMPLES + [r.host for p in provs for r in p.host_rules if r.host is not None]
    for host in samples:
        claimed = {name for name, rule in regexes if rule.matches(host, 443, "/")}
        assert len(claimed) <= 1, f"{host} is claimed by {sorted(claimed)}"
    for sample in REGEX_SAMPLES:
        assert any(rule.matches(sample, 443, "/") for _, rule in regexes), sample


def test_gemini_exact_host_outranks_google_regex() -> None:
    google, gemini = bundled()["google"], bundled()["gemini"]
    host = "generativelanguage.googleapis.com"
    g_rule = next(r for r in google.host_rules if r.matches(host, 443, "/v1beta/models"))
    m_rule = next(r for r in gemini.host_rules if r.matches(host, 443, "/v1beta/models"))
    assert m_rule.rank > g_rule.rank


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("openai", ("Authorization", "Bearer SECRET")),
        ("anthropic", ("x-api-key", "SECRET")),
        ("github", ("Authorization", "Bearer SECRET")),
        ("postmark", ("X-Postmark-Server-Token", "SECRET")),
        ("elevenlabs", ("xi-api-key", "SECRET")),
        ("brave-search", ("X-Subscription-Token", "SECRET")),
        ("exa", ("x-api-key", "SECRET")),
        ("pinecone", ("Api-Key", "SECRET")),
        ("klaviyo", ("Authorization", "Klaviyo-API-Key SECRET")),
        ("brevo", ("api-key", "SECRET")),
        ("gemini", ("x-goog-api-key", "SECRET")),
    ],
)
def test_header_formats(name: str, header: tuple[str, str]) -> None:
    assert bundled()[name].header("SECRET") == header


@pytest.mark.parametrize(
    ("name", "host", "path", "expected"),
    [
        ("openai", "api.openai.com", "/v1/chat/completions", True),
        ("github", "api.github.com", "/user", True),
        ("github", "github.com", "/login/oauth/access_token", False),
        ("gitlab", "gitlab.com", "/api/v4/user", True),
        ("gitlab", "gitlab.com", "/oauth/token", False),
        ("slack", "slack.com", "/api/chat.postMessage", True),
        ("slack", "slack.com", "/apis", False),
        ("google", "www.googleapis.com", "/drive/v3/files", True),
        ("google", "googleapis.com.evil.com", "/", False),
        ("mailchimp", "us21.api.mailchimp.com", "/3.0/ping", True),
        ("mailchimp", "api.mailchimp.com", "/3.0/ping", False),
        ("pinecone", "my-index-abc123.svc.us-east1-gcp.pinecone.io", "/query", True),
        ("openrouter", "openrouter.ai", "/api/v1/chat/completions", True),
        ("openrouter", "openrouter.ai", "/docs", False),
        ("cloudflare", "api.cloudflare.com", "/client/v4/zones", True),
    ],
)
def test_routes_of_bundled_providers(name: str, host: str, path: str, expected: bool) -> None:
    assert any(r.matches(host, 443, path) for r in bundled()[name].host_rules) is expected


def test_oauth_endpoints_are_known_so_the_proxy_can_skip_them() -> None:
    google = bundled()["google"]
    assert "oauth2.googleapis.com" in google.oauth_hosts
    assert google.is_oauth_endpoint("oauth2.googleapis.com", 443, "/token")
    assert google.is_oauth_endpoint("oauth2.googleapis.com", 443, "/revoke")
    slack = bundled()["slack"]
    assert slack.is_oauth_endpoint("slack.com", 443, "/api/oauth.v2.access")
    assert not slack.is_oauth_endpoint("slack.com", 443, "/api/chat.postMessage")
    assert "api.github.com" not in bundled()["github"].oauth_hosts  # userinfo is an ordinary API call


def test_key_patterns_accept_realistic_keys() -> None:
    import re

    examples = {
        "openai": "sk-proj-AbC123_xyz-9",
        "anthropic": "sk-ant-api03-AbC_123-x",
        "stripe": "sk_test_51Habc123",
        "sendgrid": "SG.abc_DEF-1.ghi_JKL-2",
        "mailchimp": "0123456789abcdef0123456789abcdef-us21",
        "postmark": "01234567-89ab-cdef-0123-456789abcdef",
        "groq": "gsk_abc123",
        "huggingface": "hf_abcDEF123",
        "gemini": "AIza" + "x" * 35,
    }
    for name, key in examples.items():
        api_key = bundled()[name].api_key
        assert api_key is not None and api_key.key_pattern is not None
        assert re.fullmatch(api_key.key_pattern, key), name


# -- the table in docs/providers.md ----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[3] / "docs" / "providers.md"
START, END = "<!-- bundled-table:start -->", "<!-- bundled-table:end -->"


def bundled_table() -> str:
    """The markdown table of bundled providers, as it must appear in docs/providers.md."""
    lines = [
        "| name | display name | auth | flow | header | export env | host_url |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in sorted(bundled().values(), key=lambda p: p.name):
        header = "`{}: {}`".format(*p.header("…"))
        if p.api_key is not None and p.api_key.basic_auth is not None:
            pair = "…:" if p.api_key.basic_auth == "username" else ":…"
            header = f"`{p.api_key.header_name}: Basic base64({pair})`"
        env = ", ".join(f"`{v}`" for v in p.export_env) or "—"
        raw = p.to_dict()["host_url"]
        hosts = "<br>".join("`" + h.replace("|", "\\|") + "`" for h in ([raw] if isinstance(raw, str) else raw))
        lines.append(f"| `{p.name}` | {p.display_name} | {p.auth_type} | {p.flow} | {header} | {env} | {hosts} |")
    return "\n".join(lines)


def _doc_with_table(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{bundled_table()}\n{END}{tail}"


def test_docs_table_lists_every_bundled_provider() -> None:
    text = DOC.read_text()
    assert text == _doc_with_table(text), "docs/providers.md is stale: run python " + __file__


if __name__ == "__main__":
    DOC.write_text(_doc_with_table(DOC.read_text()))
    print(f"updated {DOC}")
