"""The launcher that sandboxes the child of `authsome run`, driven directly: what the command sees and gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authsome import isolation

pytestmark = pytest.mark.skipif(not isolation.supported_platform(), reason="process isolation is Linux-only")

# Run inside a user namespace whose limit of nested user namespaces is 0: the kernel refuses them, Landlock remains.
NO_NAMESPACES = ["unshare", "--user", "--map-root-user", "--", "sh", "-c",
                 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh"]  # fmt: skip


@pytest.fixture(params=["namespaces", "landlock"])
def prefix(request: pytest.FixtureRequest) -> list[str]:
    return [] if request.param == "namespaces" else NO_NAMESPACES


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("the-secret")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "bundle.pem").write_text("public")
    (tmp_path / "work").mkdir()
    return tmp_path


def launch(prefix: list[str], tree: Path, script: str) -> subprocess.CompletedProcess[str]:
    argv = isolation.isolated_command(["sh", "-c", script], [tree / "secret"], read_only=[tree / "shared"])
    argv = [a for a in argv if a not in ("--parent", str(os.getpid()))]  # the caller is `prefix`, not this test
    return subprocess.run([*prefix, *argv], cwd=tree / "work", capture_output=True, text=True, timeout=30)


def test_hidden_paths_are_unreadable_and_read_only_paths_unwritable(prefix: list[str], tree: Path) -> None:
    result = launch(
        prefix,
        tree,
        f"cat {tree}/secret/key; cat {tree}/shared/bundle.pem; echo x > {tree}/shared/bundle.pem;"
        f" echo ok > {tree}/work/out && cat {tree}/work/out",
    )
    assert "the-secret" not in result.stdout
    assert "public" in result.stdout and "ok" in result.stdout
    if not prefix:  # Landlock only adds rights along a path: a directory of an open parent cannot be made read-only
        assert (tree / "shared" / "bundle.pem").read_text() == "public"
    assert result.returncode == 0 and "warning" not in result.stderr


def test_the_exit_status_is_the_commands(prefix: list[str], tree: Path) -> None:
    assert launch(prefix, tree, "exit 3").returncode == 3
    code = launch(prefix, tree, "kill -TERM $$").returncode
    assert (128 - code if code < 0 else code) == 128 + 15  # as `run` reports it (with Landlock the command is exec'd)


def test_a_working_directory_inside_a_hidden_path_is_refused(tree: Path) -> None:
    argv = isolation.isolated_command(["true"], [tree / "work"])
    result = subprocess.run(argv, cwd=tree / "work", capture_output=True, text=True, timeout=30)
    assert result.returncode == 125
    assert "inside a path hidden from the child" in result.stderr


def test_a_sandbox_started_ahead_gets_its_command_and_environment_later(tree: Path) -> None:
    out = tree / "work" / "out"
    child = isolation.SandboxedChild([tree / "secret"], stdout=out.open("w"))
    env = {"PATH": os.environ["PATH"], "ODD": "a=b\nc \u00e9", "EMPTY": ""}
    code = child.start([sys.executable, "-c", "import os, sys; print(repr(os.environ['ODD']), sys.argv[1:])",
                        "two words", "line\nbreak"], env).wait()  # fmt: skip
    assert code == 0
    assert out.read_text() == "'a=b\\nc \u00e9' ['two words', 'line\\nbreak']\n"


def test_a_cancelled_sandbox_runs_nothing(tree: Path) -> None:
    child = isolation.SandboxedChild([tree / "secret"])
    child.cancel()
    assert child.process.returncode == 0


def test_status_names_the_mechanism() -> None:
    found = isolation.status()
    assert found.available and found.mechanism == "namespaces"
