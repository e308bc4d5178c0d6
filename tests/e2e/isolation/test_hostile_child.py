"""A child of `authsome run` that tries every way to the real secret gets none, and well-behaved work still runs.

Driven as a user would: the `authsome` CLI, a home with a real OpenAI key stored by `authsome login`, a TLS stand-in
for api.openai.com and for a package index (test CA, trusted through SSL_CERT_FILE as a user would), and the child
script ``hostile.py``. Runs as root and, dropped with setpriv, as an unprivileged user.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from tests.tls_server import TlsStandIn, on_thread

pytestmark = pytest.mark.e2e

SECRET = "sk-hostile-" + secrets.token_hex(16)  # made per run: no file on disk (this one included) holds it
UNPRIVILEGED = 4242
BIN = Path(sys.executable).parent
HOSTILE = Path(__file__).with_name("hostile.py")


def _wheel() -> bytes:
    """A minimal valid wheel, ``demo-1.0``, for pip to download through the proxy."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("demo/__init__.py", "")
        z.writestr("demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        z.writestr(
            "demo-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr("demo-1.0.dist-info/RECORD", "")
    return buf.getvalue()


@dataclass
class Upstream:
    port: int
    ca_pem: bytes
    authorizations: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    upstream: Upstream
    wheel = _wheel()

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0]
        if host == "api.openai.com":
            self.upstream.authorizations.append(self.headers.get("Authorization"))
            body = json.dumps(
                {"object": "list", "data": [{"id": "gpt-standin", "object": "model", "created": 0, "owned_by": "test"}]}
            ).encode()
            return self._send(200, body, "application/json")
        if self.path.rstrip("/") == "/simple/demo":
            body = b'<html><body><a href="/files/demo-1.0-py3-none-any.whl">demo-1.0-py3-none-any.whl</a></body></html>'
            return self._send(200, body, "text/html")
        if self.path == "/files/demo-1.0-py3-none-any.whl":
            return self._send(200, self.wheel, "application/octet-stream")
        self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    ca = trustme.CA()
    state = Upstream(0, ca.cert_pem.bytes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("api.openai.com", "pypi.example.test").configure_cert(context)
    with on_thread(TlsStandIn(type("H", (_Handler,), {"upstream": state}), context)) as server:
        state.port = server.port
        yield state


@dataclass
class User:
    """Someone with a home, an authsome home holding an OpenAI key, and a project directory."""

    home: Path
    work: Path
    env: dict[str, str]
    prefix: list[str]
    unprivileged: bool = False
    gateway: bool = False

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.prefix, *args], env=self.env, cwd=self.work, input=stdin, capture_output=True, text=True, timeout=120
        )
        assert "internal error in the proxy" not in done.stderr, done.stderr  # a bug, whatever the test is about
        return done


def reachable_interpreter() -> list[str]:
    """A command prefix (as root) that lets another user reach this venv's interpreter.

    pyenv's interpreters often live under /root (mode 0700). In a private mount namespace, each closed directory on
    the way is covered by a tmpfs open to all, with the one entry needed bound back in; nothing changes outside.
    """
    steps = []
    target = Path(os.path.realpath(sys.executable))
    for parent in reversed(target.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            child = target.relative_to(parent).parts[0]
            steps.append(
                f'S=$(mktemp -d); mount --bind "{parent}/{child}" "$S"; mount -t tmpfs -o mode=755 tmpfs "{parent}";'
                f' mkdir -p "{parent}/{child}"; mount --bind "$S" "{parent}/{child}";'
            )
    if not steps:
        return []
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", " ".join(steps) + ' exec "$@"', "sh"]


def make_user(upstream: Upstream, uid: int | None, prefix: list[str] | None = None) -> User:
    home = Path(tempfile.mkdtemp(prefix="authsome-hostile-"))
    work = home / "project"
    work.mkdir()
    (home / "test-ca.pem").write_bytes(upstream.ca_pem)
    prefix = list(prefix or [])
    if uid is not None:
        for path in (home, work, home / "test-ca.pem"):
            os.chown(path, uid, uid)
        prefix = [*reachable_interpreter(), "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "AUTHSOME_HOME": str(home / ".authsome"),
        "AUTHSOME_KEY_SOURCE": "file",
        "SSL_CERT_FILE": str(home / "test-ca.pem"),  # the user's own trust for the stand-ins, as any user adds a CA
        "AUTHSOME_TEST_RESOLVE": f"api.openai.com:443=127.0.0.1:{upstream.port},"
        f"pypi.example.test:443=127.0.0.1:{upstream.port}",
        "LANG": "C.UTF-8",
    }
    user = User(home, work, env, prefix, unprivileged=uid is not None)
    login = user.run("authsome", "login", "openai", stdin=SECRET + "\n")
    assert login.returncode == 0, login.stderr
    return user


# Where the kernel refuses user namespaces (here: a namespace whose limit of user namespaces is 0), Landlock isolates.
NO_NAMESPACES = [
    "unshare", "--user", "--map-root-user", "--",
    "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
]  # fmt: skip


@pytest.fixture(params=["root", "unprivileged", "landlock", "root-gateway", "unprivileged-gateway"])
def user(request: pytest.FixtureRequest, upstream: Upstream) -> Iterator[User]:
    """The user, and with ``-gateway`` a running `authsome gateway` that serves their runs (no proxy per run)."""
    kind = str(request.param)
    if kind.startswith("unprivileged"):
        if os.geteuid() != 0:
            pytest.skip("dropping to another user needs root; this run is already unprivileged")
        made = make_user(upstream, UNPRIVILEGED)
    else:
        made = make_user(upstream, None, NO_NAMESPACES if kind == "landlock" else [])
    if kind.endswith("gateway"):
        started = made.run("authsome", "gateway", "start", "--listen", "127.0.0.1:0")
        assert started.returncode == 0, started.stdout + started.stderr
        made.gateway = True
    yield made
    if made.gateway:
        made.run("authsome", "gateway", "stop")
    shutil.rmtree(made.home, ignore_errors=True)


def run_agents(user: User) -> set[str]:
    """The agents named in the audit trail's request records (a run served by the gateway has one of its own)."""
    listed = user.run("authsome", "log", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    records = data["records"] if isinstance(data, dict) else data
    return {r.get("agent") for r in records if r.get("event") == "request" and r.get("agent")}


WELL_BEHAVED = """
set -e
python - <<'PY'
import openai
models = openai.OpenAI().models.list()
print("openai:", [m.id for m in models.data])
PY
git init -q repo && cd repo && echo hi > file && git add file
git -c user.name=agent -c user.email=agent@example.test commit -qm first && cd ..
echo "git: $(git -C repo log --oneline | wc -l) commit"
pip download -q --no-deps --index-url https://pypi.example.test/simple -d downloads demo
echo "pip: $(ls downloads)"
echo note > "$HOME/agent-note.txt" && echo "home: written"
echo "$HTTPS_PROXY" > proxy-url
"""


def hostile_run(
    user: User, *options: str, narrow: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[str, str], bytes]:
    pidfile = user.work / "authsome.pid"
    child = f"python {HOSTILE} {pidfile}" + (" --narrow" if narrow else "")
    script = f"echo $$ > {pidfile}; exec authsome run {' '.join(options)} -- {child}"
    result = user.run("sh", "-c", script)
    assert (user.work / "report.json").exists(), result.stdout + result.stderr
    report = json.loads((user.work / "report.json").read_text())
    return result, report, (user.work / "loot").read_bytes()


def secrets_of(user: User) -> dict[str, bytes]:
    """What must never reach the child: the key, the master key, the CA's private key."""
    master = (Path(user.env["AUTHSOME_HOME"]) / "master.key").read_bytes().strip()
    ca_pem = (user.home / ".mitmproxy" / "mitmproxy-ca.pem").read_text()
    ca_key = ca_pem.split("-----BEGIN")[1].splitlines()[1].encode()  # a line of the private key's body
    return {"api key": SECRET.encode(), "master key": master, "CA private key": ca_key}


def test_a_hostile_child_gets_no_secret(user: User, upstream: Upstream) -> None:
    result, report, loot = hostile_run(user)
    assert result.returncode == 0, result.stderr
    for name, value in secrets_of(user).items():
        where = loot.find(value)
        assert where < 0, f"the child obtained the {name}: {loot[max(0, where - 300) : where + 100]!r}"
    assert report["cli export openai --format env"] == "exit 8"  # the guard-rail answers first
    assert report["cli get openai --field api_key --show-secret"] == "exit 8"
    assert report["library"] != "exit 0"
    assert report["cli export openai --format env (no marker)"] == "exit 7"  # past the guard-rail: no store to read
    assert report["library (no marker)"] != "exit 0"
    assert report["master key"].startswith("failed")
    assert report["ca key"].startswith("failed")
    assert report["ptrace 1"].startswith("failed")
    assert report["umount"].startswith("failed")
    pid = (user.work / "authsome.pid").read_text().strip()
    for target in ("1", pid):  # the sandbox's init and `authsome run` (its pid as seen from outside)
        for what in ("environ", "mem", "root"):
            assert not report.get(f"/proc/{target}/{what}", "failed").startswith("read"), (target, what, report)
    assert report[f"ptrace {pid}"].startswith("failed")


def test_a_well_behaved_agent_still_works_inside_the_sandbox(user: User, upstream: Upstream) -> None:
    before = len(upstream.authorizations)
    result = user.run("authsome", "run", "--", "sh", "-c", WELL_BEHAVED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "openai: ['gpt-standin']" in result.stdout
    assert upstream.authorizations[before:] == [f"Bearer {SECRET}"]  # the proxy added the real key on the way
    assert "git: 1 commit" in result.stdout
    assert "pip: demo-1.0-py3-none-any.whl" in result.stdout
    assert (user.home / "agent-note.txt").read_text() == "note\n"
    assert "warning" not in result.stderr
    if user.gateway:  # the gateway served it, as an agent of the run's own that ended with it
        assert any(name.startswith("run.") for name in run_agents(user))
        proxy = (user.work / "proxy-url").read_text().strip()
        after = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy,
                                "http://www.example.org/"], capture_output=True, text=True, timeout=30)  # fmt: skip
        assert after.stdout == "407"  # the run's agent died with the run


def test_without_isolation_the_guard_rail_and_the_undumpable_proxy_remain(user: User) -> None:
    """Unsandboxed, the child can read the store (documented); the guard-rail still stops a naive agent, and the
    proxy's memory stays closed to an unprivileged child (root keeps CAP_SYS_PTRACE: nothing but the sandbox helps)."""
    if not user.unprivileged:
        pytest.skip("a root child outside the sandbox can read any process: the sandbox is what protects root")
    result, report, _ = hostile_run(user, "--no-isolate", narrow=True)
    assert result.returncode == 0, result.stderr
    assert "--no-isolate: the child can read the store" in result.stderr
    assert report["cli export openai --format env"] == "exit 8"
    assert report["cli get openai --field api_key --show-secret"] == "exit 8"
    assert report["library"] != "exit 0"
    pid = (user.work / "authsome.pid").read_text().strip()
    assert report[f"/proc/{pid}/environ"].startswith("failed")
    assert report[f"/proc/{pid}/mem"].startswith("failed")
    assert report[f"ptrace {pid}"].startswith("failed")


@pytest.fixture
def rogue() -> Iterator[tuple[Upstream, bytes]]:
    """A server posing as api.openai.com with a certificate from a CA nobody trusts, and that CA."""
    ca = trustme.CA()
    state = Upstream(0, ca.cert_pem.bytes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("api.openai.com").configure_cert(context)
    with on_thread(TlsStandIn(type("H", (_Handler,), {"upstream": state}), context)) as server:
        state.port = server.port
        yield state, ca.cert_pem.bytes()


def test_a_certificate_planted_in_the_bundle_cache_is_not_trusted_by_later_runs(
    upstream: Upstream, rogue: tuple[Upstream, bytes]
) -> None:
    """Even an unsandboxed child (--no-isolate) that writes its CA into every cached bundle gains nothing: the proxy
    verifies upstream servers against trust kept where the child cannot write."""
    server, rogue_ca = rogue
    user = make_user(upstream, None)
    try:
        (user.home / "rogue.pem").write_bytes(rogue_ca)
        plant = 'for f in $(find "$HOME/.cache/authsome" -name "*.pem"); do cat "$HOME/rogue.pem" >> "$f"; done'
        assert user.run("authsome", "run", "--no-isolate", "--", "sh", "-c", plant).returncode == 0
        user.env["AUTHSOME_TEST_RESOLVE"] = f"api.openai.com:443=127.0.0.1:{server.port}"
        result = user.run("authsome", "run", "--", "sh", "-c", "curl -s https://api.openai.com/v1/models")
        assert server.authorizations == []  # the impostor never got a request, let alone the key
        assert "upstream" in result.stdout  # authsome's 502 JSON names the failed upstream
    finally:
        shutil.rmtree(user.home, ignore_errors=True)


def test_run_falls_back_to_its_own_proxy_when_the_gateway_is_gone(upstream: Upstream) -> None:
    user = make_user(upstream, None)
    try:
        started = user.run("authsome", "--json", "gateway", "start", "--listen", "127.0.0.1:0")
        assert started.returncode == 0, started.stderr
        os.kill(int(json.loads(started.stdout)["pid"]), signal.SIGKILL)
        time.sleep(0.2)  # the kernel closes its sockets; its control socket file stays behind
        before = len(upstream.authorizations)
        result = user.run("authsome", "run", "--", "curl", "-s", "--fail", "https://api.openai.com/v1/models")
        assert result.returncode == 0, result.stderr
        assert upstream.authorizations[before:] == [f"Bearer {SECRET}"]
        assert not any(name.startswith("run.") for name in run_agents(user))  # served by a proxy of its own
    finally:
        user.run("authsome", "gateway", "stop")
        shutil.rmtree(user.home, ignore_errors=True)


def test_a_request_may_pick_another_stored_connection_in_either_mode(user: User, upstream: Upstream) -> None:
    login = user.run("authsome", "login", "openai", "--connection", "work", stdin=SECRET + "-work\n")
    assert login.returncode == 0, login.stderr
    before = len(upstream.authorizations)
    pick = "curl -s --fail -H 'X-Authsome-Connection: work' https://api.openai.com/v1/models"
    result = user.run("authsome", "run", "--", "sh", "-c", f"curl -s --fail https://api.openai.com/v1/models && {pick}")
    assert result.returncode == 0, result.stderr
    assert upstream.authorizations[before:] == [f"Bearer {SECRET}", f"Bearer {SECRET}-work"]
