"""Everything the proxy refuses or forwards without a credential, as the child sees it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import PLACEHOLDER, SECRETS, RunFn, StandIn, bundled, custom, py

pytestmark = pytest.mark.e2e

CURL_JSON = ["-sS", "-w", "\n%{http_code}"]


def split_status(out: str) -> tuple[int, dict[str, object]]:
    body, _, status = out.rstrip().rpartition("\n")
    return int(status), json.loads(body) if body.strip() else {}


def test_no_proxy_credential_gets_407_and_no_upstream_connection(run: RunFn, standin: StandIn) -> None:
    script = (
        'P="http://${HTTPS_PROXY##*@}"; '
        'curl -s -o /dev/null -w "%{http_connect}\\n" -x "$P" https://api.openai.com/v1/models; '
        'curl -s -o /dev/null -w "%{http_connect}\\n" -x "http://authsome:wrong@${HTTPS_PROXY##*@}" '
        "https://www.example.org/; "
        'curl -s -o /dev/null -w "%{http_code}\\n" -x "$P" http://api.openai.com/v1/models'
    )
    before = standin.connections
    result = run(["sh", "-c", script])
    assert result.out.split() == ["407", "407", "407"]
    assert standin.connections == before
    assert result.headers_for.calls == []


def test_host_header_naming_another_host_is_refused(run: RunFn, standin: StandIn) -> None:
    result = run(["curl", *CURL_JSON, "https://api.openai.com/v1/models", "-H", "Host: api.github.com"], verbose=True)
    status, body = split_status(result.out)
    assert status == 421
    assert body["provider"] == "openai" and "Host header names 'api.github.com'" in str(body["reason"])
    assert standin.seen == [] and result.headers_for.calls == []
    assert "refused     openai/default GET api.openai.com/v1/models (destination_mismatch" in result.err


def test_sni_naming_another_host_is_refused(run: RunFn, standin: StandIn) -> None:
    # curl tunnels to api.github.com but speaks TLS (SNI) and HTTP (Host) for api.openai.com
    result = run(
        [
            "curl",
            *CURL_JSON,
            "--connect-to",
            "api.openai.com:443:api.github.com:443",
            "https://api.openai.com/v1/models",
        ]
    )
    status, body = split_status(result.out)
    assert status == 421, result.out
    assert "api.openai.com" in str(body["reason"]) and body["provider"] == "github"
    assert standin.seen == []


def test_plain_http_never_gets_a_credential(run: RunFn, plain_server: StandIn) -> None:
    plain_server.seen.clear()
    result = run(
        ["curl", "-sS", "http://api.openai.com/v1/echo", "-H", f"Authorization: Bearer {PLACEHOLDER}"], verbose=True
    )
    assert result.code == 0, result.err
    assert plain_server.last().headers["authorization"] == f"Bearer {PLACEHOLDER}"
    assert not [h for h in plain_server.last().headers if h.startswith("proxy-")]
    assert result.headers_for.calls == []
    assert "passthrough - GET api.openai.com:80/v1/echo (plain-http)" in result.err


def test_the_ca_revocation_list_is_served_before_any_interception(
    run: RunFn, confdir: Path, plain_server: StandIn, tmp_path: Path
) -> None:
    """mitmproxy 12 serves its CA's CRL to plain-HTTP requests for it; the run's CA, not loaded yet, is loaded for it
    (and only for it: any other plain request leaves it unloaded)."""
    from mitmproxy import version

    if not version.VERSION.startswith("12"):
        pytest.skip("mitmproxy 11 does not serve a CRL")
    from cryptography import x509

    run(["true"])  # makes the CA in confdir
    ca = x509.load_pem_x509_certificate((confdir / "mitmproxy-ca-cert.pem").read_bytes())
    url = f"http://api.openai.com/mitmproxy-{ca.serial_number}.crl"
    crl_file = tmp_path / "crl.der"
    result = run(["sh", "-c", f"curl -sSf http://api.openai.com/v1/echo >/dev/null && curl -sSf -o {crl_file} {url}"])
    assert result.code == 0, result.err
    assert plain_server.last().path == "/v1/echo"  # the other plain request went on its way
    crl = x509.load_der_x509_crl(crl_file.read_bytes())
    assert crl.issuer == ca.subject


def test_ambiguous_host_is_forwarded_unchanged_and_logged_once(run: RunFn, standin: StandIn) -> None:
    twin = custom("openai-compat", "api.openai.com")
    script = "for i in 1 2; do curl -sS -o /dev/null https://api.openai.com/v1/models; done"
    result = run(["sh", "-c", script], providers=(bundled("openai"), twin))
    assert result.code == 0
    assert [s.headers.get("authorization") for s in standin.seen] == [None, None]
    assert result.err.count("ambiguous host match: api.openai.com claimed by openai, openai-compat") == 1
    assert result.headers_for.calls == []


def test_untrusted_upstream_gets_a_502_that_says_so(run: RunFn, standin: StandIn) -> None:
    result = run(["curl", *CURL_JSON, "https://api.openai.com/v1/models"], trust_test_ca=False)
    status, body = split_status(result.out)
    assert status == 502
    assert "api.openai.com:443 is not trusted" in str(body["reason"]) and "--upstream-ca" in str(body["fix"])
    assert standin.seen == [] and result.headers_for.calls == []


def test_upstream_ca_option_trusts_a_private_ca(run: RunFn, standin: StandIn, test_ca_file: Path) -> None:
    result = run(
        ["curl", "-sS", "--fail", "https://api.openai.com/v1/models"], trust_test_ca=False, upstream_ca=test_ca_file
    )
    assert result.code == 0, result.err
    assert standin.last().headers["authorization"] == f"Bearer {SECRETS['openai']}-default"


def test_missing_credential_fails_closed_with_a_json_error(run: RunFn, standin: StandIn) -> None:
    result = run(["curl", *CURL_JSON, "https://api.github.com/user"], missing=frozenset({"github"}), verbose=True)
    status, body = split_status(result.out)
    assert status == 401
    assert body["provider"] == "github" and body["connection"] == "default"
    assert body["fix_command"] == "authsome login github"
    assert "no credential stored for github/default" in str(body["reason"])
    assert standin.seen == []
    assert "refused     github/default GET api.github.com/user (credential_unavailable" in result.err


def test_openai_sdk_surfaces_the_error_message(run: RunFn, standin: StandIn) -> None:
    script = """
import openai
try:
    openai.OpenAI(max_retries=0).models.list()
except openai.AuthenticationError as exc:
    print(exc.message)
"""
    result = run(py(script), providers=(bundled("openai"),), missing=frozenset({"openai"}))
    assert "no usable credential for openai/default" in result.out and "authsome login openai" in result.out


def test_policy_refuses_what_it_does_not_allow(run: RunFn, standin: StandIn) -> None:
    from authsome.policy import build_policy

    script = (
        "curl -sS -o /dev/null -w '%{http_code}\\n' https://api.openai.com/v1/models; "
        "curl -sS -o /dev/null -w '%{http_code}\\n' -X POST https://api.openai.com/v1/files"
    )
    result = run(["sh", "-c", script], policy=build_policy(["openai:GET /v1/models"]))
    assert result.out.split() == ["200", "403"]
    assert [s.path for s in standin.seen] == ["/v1/models"]


def test_mitm_it_serves_the_proxy_ca(run: RunFn, confdir: Path) -> None:
    result = run(["curl", "-sS", "--fail", "http://mitm.it/cert/pem"])
    assert result.code == 0, result.err
    assert result.out.strip() == (confdir / "mitmproxy-ca-cert.pem").read_text().strip()


def test_unreachable_tunnel_target_gets_a_502_naming_it(run: RunFn) -> None:
    script = 'curl -s -o /dev/null -w "%{http_connect}" https://nothing.invalid/'
    result = run(["sh", "-c", script], verbose=True)
    assert result.out == "502"
