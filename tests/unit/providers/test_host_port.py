"""host:port text is read by one function, and every place that reads it gives the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsome.errors import UsageError
from authsome.gateway.address import parse_listen
from authsome.providers.hosts import InvalidPort, parse_host_rule, split_host_port
from authsome.providers.schema import parse_provider
from authsome.proxy import runner
from authsome.proxy.addon import split_authority
from authsome.proxy.relay import parse_target
from authsome.proxy.upstream import proxy_address

GOOD = [
    ("api.example.com:8443", ("api.example.com", 8443)),
    ("API.Example.COM.:443", ("api.example.com", 443)),  # case and one trailing dot
    ("bücher.example:443", ("xn--bcher-kva.example", 443)),  # IDNA
    ("[::1]:8443", ("::1", 8443)),
    ("[0:0:0:0:0:0:0:1]:1", ("::1", 1)),
    ("127.0.0.1:65535", ("127.0.0.1", 65535)),
]
BAD = [
    ("api.example.com:0", "port must be"),
    ("api.example.com:65536", "port must be"),
    ("api.example.com:", "port must be"),
    ("api.example.com:http", "port must be"),
    ("api.example.com:٤٤٣", "port must be"),  # Arabic-Indic digits: str.isdigit() says yes
    ("api.example.com:" + "9" * 5000, "port must be"),
    ("::1:443", "in brackets"),  # is 443 part of the address or the port?
    ("a:b:c", "in brackets"),
    ("[::1", "unclosed"),
    ("[::1]443", "after the IPv6 address"),
    ("[api.example.com]:443", "invalid host"),
    (":443", "empty host"),
    ("bad host:443", "invalid host"),
    ("a..b:443", "invalid host"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected
    assert split_host_port(text, None) == expected


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_split_host_port_refuses_with_one_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        split_host_port(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 100


def test_default_and_required_port_and_port_zero() -> None:
    assert split_host_port("api.example.com") == ("api.example.com", 443)
    assert split_host_port("[::1]", 80) == ("::1", 80)
    with pytest.raises(InvalidPort, match="a port is required"):
        split_host_port("api.example.com", None)
    with pytest.raises(InvalidPort, match="from 1 to 65535"):
        split_host_port("127.0.0.1:0")
    assert split_host_port("127.0.0.1:0", port_zero=True) == ("127.0.0.1", 0)


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_every_reader_of_host_port_text_agrees_on_good_text(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text) == expected  # the front door's CONNECT target
    assert split_authority(text, 443) == expected  # Host headers inside a tunnel
    assert parse_listen(text) == expected  # gateway --listen
    assert runner.parse_resolve(f"{text}={text}") == {expected: expected}  # AUTHSOME_TEST_RESOLVE
    rule = parse_host_rule(text)  # host_url
    assert (rule.host, rule.port) == expected
    bracketed = f"[{expected[0]}]" if ":" in expected[0] else expected[0]
    assert runner.upstream_proxy(f"http://{text}", {}) == (f"http://{bracketed}:{expected[1]}", None)
    assert proxy_address(f"http://{bracketed}:{expected[1]}") == expected  # what the proxy connects to
    oauth = {"token_url": f"https://{text}/token", "authorization_url": f"https://{text}/authorize"}
    provider = parse_provider({"name": "x", "auth_type": "oauth2", "oauth": oauth})
    assert provider.is_oauth_endpoint(*expected, "/token")


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_every_reader_of_host_port_text_refuses_bad_text(text: str, reason: str) -> None:
    assert parse_target(text) is None
    assert split_authority(text, 443) is None
    if text not in ("api.example.com:0", ":443"):  # --listen: port 0 picks a free port; ":PORT" is loopback
        with pytest.raises(UsageError, match=f"is not HOST:PORT: .*{reason}"):
            parse_listen(text)
    with pytest.raises(UsageError, match=f"resolve entry .* is malformed: .*{reason}"):
        runner.parse_resolve(f"api.example.com:443={text}")
    with pytest.raises(ValueError, match=f"{reason}|whitespace"):
        parse_host_rule(text)
    with pytest.raises(UsageError, match="is not an http:// or https:// proxy URL: "):
        runner.upstream_proxy(f"http://{text}", {})
    assert runner.upstream_proxy(None, {"HTTPS_PROXY": f"http://{text}"}) is None  # inherited: ignored
    with pytest.raises(UsageError, match=r"has an invalid (host|port)|is not a valid https:"):
        parse_provider({"name": "x", "auth_type": "oauth2", "oauth": {"token_url": f"https://{text}/t"}})


def test_an_unreadable_inherited_proxy_is_ignored_not_a_crash() -> None:
    assert runner.upstream_proxy(None, {"HTTPS_PROXY": "http://[::1"}) is None
    with pytest.raises(UsageError, match=r"unclosed|Invalid IPv6"):
        runner.upstream_proxy("http://[::1", {})


def test_a_connect_target_needs_brackets_around_ipv6() -> None:
    assert parse_target("::1:443") is None  # was read as [::1]:443
    assert parse_target("[::1]:443") == ("::1", 443)


def test_a_resolve_entry_with_a_port_out_of_range_is_refused() -> None:
    with pytest.raises(UsageError, match="port must be"):
        runner.parse_resolve("api.example.com:443=127.0.0.1:99999")


def test_listen_text_that_is_no_address_is_refused_at_once() -> None:
    for text in ("a:b:c", "gateway host", "[::1]:"):
        with pytest.raises(UsageError, match="is not HOST:PORT"):
            parse_listen(text)
    assert parse_listen("Gateway.Example.:9000") == ("gateway.example", 9000)


def test_url_with_bad_port_says_why(tmp_path: Path) -> None:
    oauth = {"token_url": "https://forge.test:99999/t"}
    with pytest.raises(UsageError, match=r"has an invalid port: port must be a number from 1 to 65535"):
        parse_provider({"name": "x", "auth_type": "oauth2", "oauth": oauth})
