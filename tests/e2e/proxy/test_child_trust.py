"""What the child trusts: every CA variable it might read, each client family through its own kind of trust."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from authsome.proxy import ca

from .conftest import RunFn, StandIn, py

pytestmark = pytest.mark.e2e

INHERITED = (
    "HTTPLIB2_CA_CERTS",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    "NIX_SSL_CERT_FILE",
)

# For each variable, what its client does: load that one file into a new context and verify the intercepted host.
VERIFY_EACH = """
import base64, http.client, json, os, ssl, sys, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
out = {}
for name in sys.argv[1:]:
    context = ssl.create_default_context(cafile=os.environ[name])
    conn = http.client.HTTPSConnection(proxy.hostname, proxy.port, context=context, timeout=20)
    conn.set_tunnel("api.openai.com", 443, headers={"Proxy-Authorization": "Basic " + auth})
    try:
        conn.request("GET", "/v1/models")
        out[name] = [os.environ[name], conn.getresponse().status]
    except ssl.SSLError as exc:
        out[name] = [os.environ[name], exc.reason]
print(json.dumps(out))
"""


def test_inherited_ca_variables_point_at_the_runs_trust(run: RunFn, standin: StandIn, test_ca_file: Path) -> None:
    """Clients that read their own CA variable (httplib2, gRPC, gcloud, Nix builds) verify intercepted hosts."""
    parent = {name: str(test_ca_file) for name in INHERITED}  # the parent's value: a bundle without the proxy CA
    result = run([*py(VERIFY_EACH), *INHERITED, "SSL_CERT_FILE"], env=parent)
    assert result.code == 0, result.err
    seen = result.json()
    bundle = seen.pop("SSL_CERT_FILE")[0]
    assert seen == {name: [bundle, 200] for name in INHERITED}
    assert standin.last().headers["authorization"].startswith("Bearer sk-test-openai-REAL")


CLIENTS = """
import json, os, ssl, subprocess, urllib.request
import httpx, requests
url = "https://api.openai.com/v1/models"
out = {
    "requests": [requests.get(url, timeout=20).status_code for _ in range(3)],  # a new SSL context per call
    "httpx": httpx.get(url, timeout=20).status_code,
    "urllib": urllib.request.urlopen(url, timeout=20).status,
    "curl": subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True,
                           text=True).stdout,
    "requests_ca_bundle": os.path.isdir(os.environ["REQUESTS_CA_BUNDLE"]),
    "ssl_cert_dir": os.environ["SSL_CERT_DIR"].split(os.pathsep),
    "node": open(os.environ["NODE_EXTRA_CA_CERTS"]).read().count("BEGIN CERTIFICATE"),
}
print(json.dumps(out))
"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_each_client_family_verifies_through_its_own_trust(
    run: RunFn, standin: StandIn, test_ca_file: Path, tmp_path: Path
) -> None:
    system = ca.system_bundle()
    assert system is not None
    own_dir = tmp_path / "own-certs"
    own_dir.mkdir()
    parent = {"NODE_EXTRA_CA_CERTS": str(system), "SSL_CERT_DIR": str(own_dir)}  # "the whole system bundle"
    result = run(py(CLIENTS), env=parent)
    assert result.code == 0, result.err
    seen = result.json()
    assert (seen["requests"], seen["httpx"], seen["urllib"], seen["curl"]) == ([200, 200, 200], 200, 200, "200")
    assert seen["requests_ca_bundle"] is True  # requests loads a hashed directory lazily
    assert seen["ssl_cert_dir"][1:] == [str(own_dir)]  # the run's directory first, the parent's kept
    assert seen["node"] < len(ca.pem_certs(system.read_bytes())) // 2  # only what Node lacks, not the whole bundle
    assert len(standin.seen) == 6
