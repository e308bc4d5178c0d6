"""Real HTTP clients through `authsome run`: curl, requests, httpx, the OpenAI SDK, websockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from .conftest import PLACEHOLDER, SECRETS, RunFn, StandIn, bundled, py

pytestmark = pytest.mark.e2e


def test_curl_gets_the_credential_injected(run: RunFn, standin: StandIn) -> None:
    result = run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "https://api.openai.com/v1/models",
            "-H",
            "Authorization: Bearer authsome-proxy-managed",
        ],
        verbose=True,
    )
    assert result.code == 0, result.err
    assert result.json()["data"][0]["id"] == "gpt-standin"
    seen = standin.last()
    assert seen.headers["authorization"] == f"Bearer {SECRETS['openai']}-default"
    assert seen.sni == "api.openai.com"
    assert not [h for h in seen.headers if h.startswith("proxy-")]
    assert "injected    openai/default GET api.openai.com/v1/models" in result.err
    assert SECRETS["openai"] not in result.err


def test_new_connections_to_a_routed_host_resume_the_upstream_tls_session(run: RunFn, standin: StandIn) -> None:
    curl = "curl -sS --fail-with-body -o /dev/null https://api.openai.com/v1/models"
    result = run(["sh", "-c", " && ".join([curl] * 4)])  # four processes: four client connections
    assert result.code == 0, result.err
    first, *later = standin.seen[-4:]
    assert first.resumed is False
    # later connections offer the kept session; the server accepts it (no full handshake, no certificate check)
    assert any(seen.resumed for seen in later), [seen.resumed for seen in later]
    assert {seen.headers["authorization"] for seen in standin.seen[-4:]} == {f"Bearer {SECRETS['openai']}-default"}


def test_custom_header_provider_gets_its_own_header(run: RunFn, standin: StandIn) -> None:
    result = run(["curl", "-sS", "https://api.anthropic.com/v1/messages", "-H", "x-api-key: $PLACEHOLDER"])
    assert result.code == 0, result.err
    assert standin.last().headers["x-api-key"] == f"{SECRETS['anthropic']}-default"


def test_requests_session_keeps_injecting_over_keep_alive(run: RunFn, standin: StandIn) -> None:
    script = """
import json, os, requests
s = requests.Session()
out = []
for path in ("/user", "/repos/a/b", "/user"):
    r = s.get("https://api.github.com" + path, headers={"Authorization": "Bearer " + os.environ["GITHUB_TOKEN"]})
    out.append(r.json()["headers"]["authorization"])
print(json.dumps(out))
"""
    result = run(py(script), connections={"github": "work"})
    assert result.code == 0, result.err
    assert [h.startswith("[redacted]") for h in result.json()] == [True] * 3  # the echo never reaches the child
    assert [s.headers["authorization"] for s in standin.seen[-3:]] == [f"Bearer {SECRETS['github']}-work"] * 3
    assert standin.connections >= 1
    assert result.headers_for.calls == [("github", "work")]  # reused for credential_ttl seconds


def test_httpx_and_placeholder_env(run: RunFn, standin: StandIn) -> None:
    script = """
import json, os, httpx
with httpx.Client() as c:
    r = c.post("https://api.openai.com/v1/echo", json={"q": 1},
               headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
print(json.dumps({"status": r.status_code, "seen": r.json()["headers"]["authorization"],
                  "env": os.environ["OPENAI_API_KEY"]}))
"""
    result = run(py(script))
    assert result.code == 0, result.err
    got = result.json()
    assert got["status"] == 200 and got["env"] == PLACEHOLDER
    assert got["seen"].startswith("[redacted]")  # the stand-in echoes the header; the child gets it redacted
    assert standin.last().headers["authorization"] == f"Bearer {SECRETS['openai']}-default"


def test_openai_sdk_with_its_placeholder_key(run: RunFn, standin: StandIn) -> None:
    script = """
import json, time, openai
client = openai.OpenAI(max_retries=0)
models = [m.id for m in client.models.list()]
reply = client.chat.completions.create(model="gpt-standin", messages=[{"role": "user", "content": "hi"}])
got = []
for chunk in client.chat.completions.create(model="gpt-standin", messages=[{"role": "user", "content": "hi"}],
                                            stream=True):
    got.append((chunk.choices[0].delta.content, time.time()))
print(json.dumps({"models": models, "reply": reply.choices[0].message.content, "stream": got}))
"""
    result = run(py(script), providers=(bundled("openai"),))
    assert result.code == 0, result.err
    data = result.json()
    assert data["models"] == ["gpt-standin"]
    assert data["reply"] == "hello from the stand-in"
    assert [text for text, _ in data["stream"]] == ["Hel", "lo"]
    first_received, second_sent = data["stream"][0][1], standin.sse_sent[-1]
    assert first_received < second_sent, "the first chunk arrived only after the server sent the last one"
    assert {s.headers["authorization"] for s in standin.seen} == {f"Bearer {SECRETS['openai']}-default"}


def test_server_sent_events_arrive_as_they_are_sent(run: RunFn, standin: StandIn) -> None:
    script = """
import json, time, httpx
got = []
with httpx.stream("GET", "https://api.openai.com/sse", timeout=10) as r:
    for line in r.iter_lines():
        if line:
            got.append((line, time.time()))
print(json.dumps(got))
"""
    result = run(py(script))
    assert result.code == 0, result.err
    got = result.json()
    assert [line for line, _ in got] == ["data: first", "data: second"]
    assert len(standin.sse_sent) == 2
    assert got[0][1] < standin.sse_sent[1], "the first event was held back until the second was sent"


def test_curl_streams_server_sent_events(run: RunFn, standin: StandIn) -> None:
    script = (
        'curl -sSN https://api.openai.com/sse | while read -r line; do if [ -n "$line" ]; then '
        "python3 -c 'import sys,time; print(sys.argv[1], time.time())' \"$line\"; fi; done"
    )
    result = run(["sh", "-c", script])
    assert result.code == 0, result.err
    lines = [line.rsplit(" ", 1) for line in result.out.splitlines()]
    assert [text for text, _ in lines] == ["data: first", "data: second"]
    assert float(lines[0][1]) < standin.sse_sent[1]


def test_websocket_upgrade_passes_through(run: RunFn, standin: StandIn) -> None:
    # websockets' asyncio client, not its threaded one: that one reads and writes one TLS socket from two threads at
    # once, which OpenSSL does not allow (CPython 3.11's ssl module does not serialise them; python/cpython#137583).
    # About one handshake in 1,000 lost its request or crashed the child (exit 139), whoever the proxy was.
    script = """
import asyncio, json, ssl
from websockets.asyncio.client import connect
async def main():
    async with connect("wss://api.openai.com/ws", ssl=ssl.create_default_context(), open_timeout=10) as ws:
        replies = []
        for text in ("one", "two"):
            await ws.send(text)
            replies.append(await asyncio.wait_for(ws.recv(), 10))
    return replies
print(json.dumps(asyncio.run(main())))
"""
    result = run(py(script))
    assert result.code == 0, result.err
    assert result.json() == ["echo:one", "echo:two"]
    assert standin.last().headers["authorization"] == f"Bearer {SECRETS['openai']}-default"


def test_unmatched_host_is_tunnelled_with_the_servers_own_certificate(run: RunFn, standin: StandIn) -> None:
    script = """
import http.client, json, os, ssl, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
auth = __import__("base64").b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
issuers = {}
for host in ("www.example.org", "api.openai.com"):
    conn = http.client.HTTPSConnection(proxy.hostname, proxy.port, context=ssl.create_default_context())
    conn.set_tunnel(host, 443, headers={"Proxy-Authorization": "Basic " + auth})
    conn.request("GET", "/who", headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
    body = json.loads(conn.getresponse().read())
    issuer = dict(x[0] for x in conn.sock.getpeercert()["issuer"])
    issuers[host] = [issuer.get("organizationName"), body["headers"]["authorization"]]
print(json.dumps(issuers))
"""
    result = run(py(script), verbose=True)
    assert result.code == 0, result.err
    data = result.json()
    assert data["www.example.org"] == ["authsome test CA", f"Bearer {PLACEHOLDER}"]
    assert "tunnel      www.example.org:443 (no route: relayed untouched)" in result.err
    assert data["api.openai.com"][0] == "mitmproxy" and data["api.openai.com"][1].startswith("[redacted]")
    assert any(s.headers.get("authorization") == f"Bearer {SECRETS['openai']}-default" for s in standin.seen)


def test_the_child_is_shown_an_ec_certificate_for_the_routed_host_from_the_proxy_ca(run: RunFn, confdir: Path) -> None:
    script = """
import http.client, json, os, ssl, urllib.parse
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
auth = __import__("base64").b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
conn = http.client.HTTPSConnection(proxy.hostname, proxy.port, context=ssl.create_default_context())
conn.set_tunnel("api.openai.com", 443, headers={"Proxy-Authorization": "Basic " + auth})
conn.request("GET", "/v1/models")
assert conn.getresponse().status == 200
cert = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))
names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
print(json.dumps({"ec": isinstance(cert.public_key(), ec.EllipticCurvePublicKey), "names": names,
                  "issuer": cert.issuer.rfc4514_string(), "tls": conn.sock.version()}))
"""
    result = run(py(script))
    assert result.code == 0, result.err
    seen = result.json()
    ca = x509.load_pem_x509_certificate((confdir / "mitmproxy-ca-cert.pem").read_bytes())
    assert seen["ec"] is True  # the handshake was signed with ECDSA, whatever the CA's own key
    assert "api.openai.com" in seen["names"]
    assert seen["issuer"] == ca.subject.rfc4514_string()  # verified by the child against the proxy CA


def test_child_environment(run: RunFn, test_ca_file: object) -> None:
    env = {
        "NO_PROXY": "internal.corp",
        "no_proxy": "other.corp",
        "OPENAI_API_KEY": "sk-real-in-parent",
        "AUTHSOME_PASSPHRASE": "hunter2",
        "HTTPS_PROXY": "",
    }
    result = run(py("import json, os; print(json.dumps(dict(os.environ)))"), env=env)
    assert result.code == 0, result.err
    child = result.json()
    url = child["HTTPS_PROXY"]
    user = "authsome" if result.served_by == "own proxy" else result.agent  # the gateway's agent for this run
    assert url.startswith(f"http://{user}:") and "@127.0.0.1:" in url
    assert {child[k] for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")} == {url}
    assert child["NO_PROXY"] == child["no_proxy"] == "internal.corp,other.corp,localhost,127.0.0.1,::1"
    assert child["OPENAI_API_KEY"] == child["ANTHROPIC_API_KEY"] == child["GITHUB_TOKEN"] == PLACEHOLDER
    assert child["GH_TOKEN"] == PLACEHOLDER
    assert "AUTHSOME_PASSPHRASE" not in child and "AUTHSOME_TEST_RESOLVE" not in child
    assert child["AUTHSOME_RUN"] == "1" and child["NODE_USE_ENV_PROXY"] == "1"
    bundle_vars = (
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "AWS_CA_BUNDLE",
        "PIP_CERT",
        "CARGO_HTTP_CAINFO",
        "DENO_CERT",
    )
    assert len({child[v] for v in bundle_vars}) == 1
    assert Path(child["REQUESTS_CA_BUNDLE"]).is_dir()  # the same certificates, hashed: loaded lazily
    assert child["NODE_EXTRA_CA_CERTS"] != child["SSL_CERT_FILE"]
    assert not any(secret in json.dumps(child) for secret in SECRETS.values())
    assert "sk-real-in-parent" not in json.dumps(child) and "hunter2" not in json.dumps(child)


def test_a_slow_credential_lookup_does_not_stall_other_requests(run: RunFn, standin: StandIn) -> None:
    script = """
import json, threading, time, httpx
done = {}
def get(name, url):
    httpx.get(url, timeout=20)
    done[name] = time.monotonic()
slow = threading.Thread(target=get, args=("github", "https://api.github.com/user"))
slow.start()
time.sleep(0.3)
get("openai", "https://api.openai.com/v1/models")
get("tunnel", "https://www.example.org/")
slow.join()
print(json.dumps(sorted(done, key=done.get)))
"""
    result = run(py(script), delay={"github": 2.0})
    assert result.code == 0, result.err
    assert result.json() == ["openai", "tunnel", "github"]


def test_first_run_creates_the_ca_and_doctor_can_see_it(run: RunFn, tmp_path: Path) -> None:
    from authsome.proxy.ca import ca_status

    confdir = tmp_path / "fresh-confdir"
    assert ca_status(confdir)["exists"] is False
    result = run(["curl", "-sS", "--fail", "https://api.openai.com/v1/models"], confdir=confdir)
    assert result.code == 0, result.err
    status = ca_status(confdir)
    assert status["exists"] is True and status["trusted_system"] is False
    assert oct((confdir / "mitmproxy-ca.pem").stat().st_mode & 0o777) == "0o600"


def test_audit_records_each_request_without_secrets(run: RunFn, standin: StandIn) -> None:
    records: list[dict[str, object]] = []
    script = "curl -sS -o /dev/null 'https://api.openai.com/v1/models?key=querysecret' -H 'X-Extra: 1'"
    result = run(["sh", "-c", script], audit=records.append, run_id="feedc0ffee12")
    assert result.code == 0
    assert len(records) == 1
    record = records[0]
    assert record["run_id"] == "feedc0ffee12" and record["command"] == "sh"
    assert (record["decision"], record["provider"], record["host"], record["path"], record["status"]) == (
        "injected",
        "openai",
        "api.openai.com",
        "/v1/models",
        200,
    )
    assert "querysecret" not in json.dumps(records) and SECRETS["openai"] not in json.dumps(records)
