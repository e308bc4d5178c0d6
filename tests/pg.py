"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, ``initdb`` and ``pg_ctl`` into a temporary
directory, listening on a loopback port only, password (SCRAM) authentication.

One server per test process (started by the first test that asks, stopped at exit), a fresh database per test::

    from tests.pg import pg_server, pg_url  # noqa: F401   (in a conftest.py: registers the fixtures)

PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` system user (created when missing)
in a directory it owns. When no ``initdb`` is found, the set-up installs the ``postgresql`` package with apt (as root).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ADMIN_USER = "authsome_test"
_counter = itertools.count(1)


@dataclass
class PgServer:
    """A running server and how to reach it."""

    bindir: Path
    datadir: Path
    port: int
    password: str
    user: str | None  # the system user it runs as (None: this process's user)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{ADMIN_USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser on the ``postgres`` database (autocommit)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"t{os.getpid()}_{next(_counter)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception):
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        _run_as(self.user, [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "immediate", "-s"])
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb (Debian), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def _install() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is not installed: run `sudo apt-get install postgresql` (or scripts/test)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env, stdout=subprocess.DEVNULL)


def _system_user() -> str | None:
    """None when this process may run PostgreSQL itself; as root, the ``postgres`` user (created when missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return "postgres"


def _run_as(user: str | None, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, user=user, check=True, capture_output=True, text=True, cwd="/")


def _sweep(bindir: Path, user: str | None) -> None:
    """Stop and remove the servers of test processes that died without stopping theirs (killed, timed out)."""
    for base in Path(tempfile.gettempdir()).glob("authsome-pg-*"):
        try:
            owner = int((base / "owner").read_text())
            os.kill(owner, 0)
            continue  # its process is alive: its server is in use
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        with contextlib.suppress(subprocess.CalledProcessError):
            _run_as(user, [str(bindir / "pg_ctl"), "stop", "-D", str(base / "data"), "-m", "immediate", "-s"])
        shutil.rmtree(base, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(*, durable: bool = False) -> PgServer:
    """initdb + pg_ctl start into a new temporary directory; raises with the server's log when it does not start.

    Tests run without fsync (a test kills clients, never the server); ``durable`` keeps the defaults (benchmarks)."""
    bindir = find_bindir()
    if bindir is None:
        _install()
        bindir = find_bindir()
        assert bindir is not None, "apt installed postgresql but no initdb was found"
    user = _system_user()
    _sweep(bindir, user)
    base = Path(tempfile.mkdtemp(prefix="authsome-pg-"))
    (base / "owner").write_text(str(os.getpid()))
    datadir, sockets, pwfile = base / "data", base / "run", base / "pw"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password + "\n")
    sockets.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (base, sockets, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    base.chmod(0o700)
    _run_as(
        user,
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            ADMIN_USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
    )
    options = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={sockets} -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    last_error = ""
    for _ in range(5):  # a port taken between _free_port and the bind: try another
        port = _free_port()
        log = base / "server.log"
        try:
            _run_as(
                user,
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(datadir),
                    "-w",
                    "-t",
                    "60",
                    "-s",
                    "-l",
                    str(log),
                    "-o",
                    f"-p {port} {options}",
                ],
            )
            return PgServer(bindir, datadir, port, password, user)
        except subprocess.CalledProcessError as exc:
            last_error = (log.read_text() if log.exists() else "") + exc.stderr
    shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")


@functools.cache
def shared_server() -> PgServer:
    """The one server of this test process, stopped when the process exits."""
    server = start_server()
    atexit.register(server.stop)
    return server


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The test session's PostgreSQL server."""
    return shared_server()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty database on the session's server (its URL, with the password), dropped after the test."""
    from authsome.store import pg

    url = pg_server.new_database()
    yield url
    pg.forget(url)
    pg_server.drop_database(url)
