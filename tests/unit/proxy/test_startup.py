"""Start-up of `authsome run`: what mitmproxy imports but a run never uses stays unloaded; no teardown at exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Modules whose bodies would run if their package were really imported at start-up.
HEAVY = ("pyparsing.core", "service_identity.cryptography", "ruamel.yaml.main")

RUN = """
import json, pathlib, sys
from authsome.proxy.runner import RunConfig, run_command
code = run_command(RunConfig(command=["true"], routes=[], headers_for=lambda p, c: {{}}, isolate=False,
                             confdir=pathlib.Path(sys.argv[1])))
loaded = [name for name in {heavy!r} if name in sys.modules]
# what a run never does still works when something asks for it
from mitmproxy import command_lexer
import service_identity, ruamel.yaml
usable = (command_lexer.unquote('"a b"'), service_identity.VerificationError.__name__, ruamel.yaml.YAML.__name__)
print(json.dumps({{"code": code, "loaded": loaded, "usable": usable}}))
"""


def test_a_run_does_not_load_what_it_never_uses(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy=HEAVY), str(tmp_path / "mitmproxy")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["code"] == 0
    assert result["loaded"] == []
    assert result["usable"] == ["a b", "VerificationError", "YAML"]


CLI = """
import atexit, sys
atexit.register(lambda: sys.stdout.write("teardown ran\\n"))
from authsome.cli.main import main
main(sys.argv[1:])
"""


def test_run_exits_with_the_childs_code_without_interpreter_teardown(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AUTHSOME_HOME": str(tmp_path / "home")}
    env["AUTHSOME_KEY_SOURCE"] = "file"
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "run", "--no-isolate", "--", "sh", "-c", "echo from-child; exit 3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 3
    assert proc.stdout == "from-child\n"  # no atexit handler, no module teardown: the process ended at once
    assert "--no-isolate" in proc.stderr  # what authsome wrote before exiting was flushed
