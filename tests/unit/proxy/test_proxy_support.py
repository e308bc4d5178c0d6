"""The pure helpers of `authsome run`: child environment, CA bundles and status, config parsing, reporting."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trustme

from authsome.errors import UsageError
from authsome.providers.schema import PLACEHOLDER
from authsome.proxy import ca, environment, runner, server
from authsome.proxy.report import Reporter, RequestRecord, path_only

from .conftest import make_provider

# -- environment ----------------------------------------------------------------------------------------------------


def test_no_proxy_keeps_both_spellings_and_adds_loopback() -> None:
    parent = {"NO_PROXY": "a.corp, b.corp", "no_proxy": "b.corp,c.corp,localhost"}
    assert environment.no_proxy(parent) == "a.corp,b.corp,c.corp,localhost,127.0.0.1,::1"
    assert environment.no_proxy({}) == "localhost,127.0.0.1,::1"


def test_child_env_replaces_secrets_with_placeholders(tmp_path: Path) -> None:
    openai = make_provider("openai", "api.openai.com", env_var="OPENAI_API_KEY")
    parent = {
        "PATH": "/bin",
        "OPENAI_API_KEY": "sk-real",
        "AUTHSOME_PASSPHRASE": "pw",
        "HTTPS_PROXY": "http://corp:1",
        "AUTHSOME_TEST_RESOLVE": "x",
        "AUTHSOME_MASTER_KEY": "bWFzdGVy",
        "AUTHSOME_STORE_URL": "postgresql://authsome:dbpass@db/authsome",
    }
    env = environment.child_env(
        parent,
        url="http://authsome:t@127.0.0.1:1",
        bundle=tmp_path / "b.pem",
        node_bundle=tmp_path / "n.pem",
        providers=[openai],
    )
    assert env["OPENAI_API_KEY"] == PLACEHOLDER
    assert "AUTHSOME_PASSPHRASE" not in env and "AUTHSOME_TEST_RESOLVE" not in env
    assert "AUTHSOME_MASTER_KEY" not in env and "AUTHSOME_STORE_URL" not in env
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://authsome:t@127.0.0.1:1"
    assert env["PATH"] == "/bin" and env["AUTHSOME_RUN"] == "1"
    assert {env[v] for v in environment.BUNDLE_VARS} == {str(tmp_path / "b.pem")}
    assert env["NODE_EXTRA_CA_CERTS"] == str(tmp_path / "n.pem")


# -- CA bundles ------------------------------------------------------------------------------------------------------


@pytest.fixture
def two_cas(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    trustme.CA().cert_pem.write_to_path(str(a))
    trustme.CA().cert_pem.write_to_path(str(b))
    return a, b


def test_user_bundles_come_from_ssl_cert_file_and_requests_ca_bundle(two_cas: tuple[Path, Path]) -> None:
    a, b = two_cas
    env = {"SSL_CERT_FILE": str(a), "REQUESTS_CA_BUNDLE": "/nonexistent.pem"}
    assert ca.user_bundles(env, [b, None]) == [a, b]


def test_ca_status(tmp_path: Path, two_cas: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ca.ca_status(tmp_path / "none")
    assert missing["exists"] is False and missing["trusted_system"] is False
    confdir = tmp_path / "mitm"
    confdir.mkdir()
    a, b = two_cas
    (confdir / ca.CA_CERT_NAME).write_bytes(a.read_bytes())
    monkeypatch.setattr(ca.sys, "platform", "linux")
    monkeypatch.setattr(ca, "system_bundle", lambda: b)
    status = ca.ca_status(confdir)
    assert status["exists"] is True and status["trusted_system"] is False
    assert status["path"] == str(confdir / ca.CA_CERT_NAME) and status["trusted_certifi"] is False
    system = tmp_path / "system.pem"
    system.write_bytes(b.read_bytes() + a.read_bytes())
    monkeypatch.setattr(ca, "system_bundle", lambda: system)
    assert ca.ca_status(confdir)["trusted_system"] is True


# -- configuration ---------------------------------------------------------------------------------------------------


def test_parse_resolve() -> None:
    assert runner.parse_resolve("API.OpenAI.com:443=127.0.0.1:4443, x.test:80=[::1]:8080") == {
        ("api.openai.com", 443): ("127.0.0.1", 4443),
        ("x.test", 80): ("::1", 8080),
    }
    assert runner.parse_resolve("") == {}
    for bad in ("api.openai.com=127.0.0.1:1", "a:b=c:d", "a:1=b"):
        with pytest.raises(UsageError, match="resolve entry"):
            runner.parse_resolve(bad)


def test_upstream_proxy_from_option_or_environment() -> None:
    assert runner.upstream_proxy("http://u:p%40ss@corp:3128", {}) == ("http://corp:3128", "u:p@ss")
    assert runner.upstream_proxy(None, {"HTTPS_PROXY": "corp.example:8080"}) == ("http://corp.example:8080", None)
    assert runner.upstream_proxy(None, {"https_proxy": "https://c:1", "HTTPS_PROXY": "http://d:2"}) == (
        "https://c:1",
        None,
    )
    assert runner.upstream_proxy(None, {"HTTP_PROXY": "http://corp"}) == ("http://corp:80", None)
    assert runner.upstream_proxy(None, {"HTTPS_PROXY": "socks5://corp:1080"}) is None  # inherited: ignored
    assert runner.upstream_proxy(None, {}) is None
    with pytest.raises(UsageError, match="not an http"):
        runner.upstream_proxy("socks5://corp:1080", {})


def test_http2_only_with_the_smuggling_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    for version, expected in (((11, 0, 2), False), ((12, 1, 1), False), ((12, 1, 2), True), ((13, 0), True)):
        monkeypatch.setattr(server, "mitmproxy_version", lambda v=version: v)
        assert server.http2_is_safe() is expected


# -- reporting -------------------------------------------------------------------------------------------------------


def test_record_lines() -> None:
    injected = RequestRecord("injected", "GET", "api.openai.com", 443, "/v1/models", "openai", "default", "rule x")
    assert injected.line() == "injected    openai/default GET api.openai.com/v1/models"
    passthrough = RequestRecord("passthrough", "POST", "example.com", 8443, "/", reason="no-route")
    assert passthrough.line() == "passthrough - POST example.com:8443/ (no-route)"
    assert path_only("/a/b?key=secret#frag") == "/a/b" and path_only("?x") == "/"


def test_reporter_warns_once_and_survives_a_failing_audit() -> None:
    lines: list[str] = []
    calls: list[dict[str, object]] = []

    def audit(record: dict[str, object]) -> None:
        calls.append(record)
        raise OSError("store locked")

    reporter = Reporter(verbose=False, audit=audit, write=lines.append)
    reporter.warn("ambiguous host match: x")
    reporter.warn("ambiguous host match: x")
    reporter.info("only with --verbose")
    record = RequestRecord("injected", "GET", "h", 443, "/")
    reporter.finished(record)
    reporter.finished(record)
    reporter.close()
    assert len(calls) == 2
    assert lines == [
        "authsome: ambiguous host match: x",
        "authsome: could not write the audit record (OSError); later failures are not shown",
    ]


# -- front door helpers ----------------------------------------------------------------------------------------------


def test_parse_connect_target() -> None:
    from authsome.proxy.relay import parse_target

    assert parse_target("API.OpenAI.com.:443") == ("api.openai.com", 443)
    assert parse_target("[::1]:8443") == ("::1", 8443)
    for bad in ("api.openai.com", "api.openai.com:0", "api.openai.com:x", "bad host:443", ":443"):
        assert parse_target(bad) is None, bad


def test_head_parse_and_basic_auth() -> None:
    import base64

    from authsome.proxy.relay import Head, basic_auth_ok

    head = Head.parse(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nProxy-Authorization: Basic eA==\r\n\r\n")
    assert head.first_line == "CONNECT a.test:443 HTTP/1.1"
    assert head.headers["proxy-authorization"] == "Basic eA=="
    good = "Basic " + base64.b64encode(b"authsome:tok").decode()
    assert basic_auth_ok(good, b"authsome:tok")
    assert basic_auth_ok(good.replace("Basic", "basic"), b"authsome:tok")
    for bad in ("", "Bearer x", "Basic !!", "Basic " + base64.b64encode(b"authsome:other").decode()):
        assert not basic_auth_ok(bad, b"authsome:tok"), bad


def test_an_internal_proxy_error_is_told_once_per_kind_without_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    from authsome.proxy.server import _Collect

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            "mitmproxy.addonmanager", logging.ERROR, __file__, 1, "Addon error: %s", (exc,), (type(exc), exc, None)
        )

    quiet = _Collect(verbose=False)
    quiet.emit(record(KeyError("sk-secret-while-starting")))
    assert quiet.errors and capsys.readouterr().err == ""  # while starting: kept, to explain a failed start
    quiet.collecting = False
    for exc in (KeyError("sk-secret-one"), KeyError("sk-secret-two"), ValueError("sk-secret-three")):
        quiet.emit(record(exc))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("(")[1].split(")")[0] for line in lines] == ["KeyError", "ValueError"]
    assert all(line.startswith("authsome: internal error in the proxy") for line in lines)
    assert "sk-secret" not in "".join(lines)  # the message could quote a request
