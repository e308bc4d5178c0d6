"""flows.http: the https rule for OAuth URLs, safe server text, client authentication, errors without secrets."""

from __future__ import annotations

import httpx
import pytest

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows.http import (
    auth_method,
    is_loopback_url,
    json_object,
    network_failure,
    oauth_client,
    oauth_error,
    require_secure_url,
    safe_text,
)
from authsome.models import ClientConfig
from authsome.secret import Secret


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example/token",
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
        "http://[::1]:9000/token",
    ],
)
def test_https_or_loopback_http_is_accepted(url: str) -> None:
    assert require_secure_url(url, "token endpoint") == url


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example/token",  # plain http off loopback
        "http://127.0.0.1.evil.example/token",  # loopback look-alike
        "ftp://idp.example/token",
        "https:///no-host",
        "javascript:alert(1)",
    ],
)
def test_anything_else_is_refused_naming_what(url: str) -> None:
    with pytest.raises(UsageError, match=r"refusing token endpoint .*https://"):
        require_secure_url(url, "token endpoint")


def test_a_missing_url_says_it_is_unknown() -> None:
    with pytest.raises(UsageError, match="no revocation endpoint is known"):
        require_secure_url(None, "revocation endpoint")


def test_is_loopback_url() -> None:
    assert is_loopback_url("http://127.0.0.1:1/") and is_loopback_url("http://LocalHost/")
    assert not is_loopback_url("http://127.0.0.2/") and not is_loopback_url("https://example.com/")


def test_safe_text_strips_control_characters_secrets_and_length() -> None:
    secret = "tok-0123456789"
    text = safe_text(f"bad\x1b[31m\nnews {secret} and {secret}", [Secret(secret), None, "abc"])
    assert "\x1b" not in text and "\n" not in text and secret not in text
    assert text.count("***") == 2
    assert safe_text("short secret abc", ["abc"]) == "short secret abc"  # under 4 chars: not a secret worth hiding
    long = safe_text("x" * 500, limit=50)
    assert len(long) == 50 and long.endswith("…")


@pytest.mark.parametrize(
    ("secret", "stored", "expected"),
    [
        (None, None, "none"),
        ("s3cret", None, "client_secret_basic"),
        ("s3cret", "client_secret_post", "client_secret_post"),
        (None, "client_secret_post", "none"),  # a stored method that needs a secret we do not have
        ("s3cret", "none", "client_secret_basic"),  # a secret we have is always sent
        ("s3cret", "private_key_jwt", "client_secret_basic"),  # not one we support
    ],
)
def test_auth_method(secret: str | None, stored: str | None, expected: str) -> None:
    client = ClientConfig(
        client_id="c",
        client_secret=Secret(secret) if secret else None,
        metadata={"token_endpoint_auth_method": stored} if stored else {},
    )
    assert auth_method(client) == expected


def test_oauth_client_is_configured_without_redirects() -> None:
    client = ClientConfig(client_id="cid", client_secret=Secret("s3cret-value"))
    with oauth_client(client) as oc:
        assert oc.client_id == "cid" and oc.token_endpoint_auth_method == "client_secret_basic"
        assert oc.follow_redirects is False and oc.headers["User-Agent"] == "authsome"


def test_oauth_error_reads_authlib_errors_only() -> None:
    from authlib.integrations.base_client import OAuthError

    assert oauth_error(OAuthError("invalid_grant", "the grant\x07 expired")) == ("invalid_grant", "the grant  expired")
    assert oauth_error(ValueError("x")) is None


def test_network_failure_names_the_host_not_the_request() -> None:
    exc = network_failure("token endpoint", "https://idp.example:8443/token?code=SECRET", httpx.ConnectError("boom"))
    assert isinstance(exc, AuthenticationFailed)
    assert exc.message == "could not reach the token endpoint at idp.example:8443 (ConnectError)"
    assert "SECRET" not in str(exc)


def test_json_object_refuses_anything_but_an_object() -> None:
    assert json_object(httpx.Response(200, json={"a": 1}), "x") == {"a": 1}
    for response in (httpx.Response(200, json=[1]), httpx.Response(502, text="<html>bad gateway</html>")):
        with pytest.raises(AuthenticationFailed, match=r"the registration endpoint answered HTTP \d+ without a JSON"):
            json_object(response, "registration endpoint")
