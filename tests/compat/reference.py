"""The real authsome package from PyPI, installed into its own Python 3.13 venv per version, for compatibility tests.

``reference_python(version)`` returns the venv's interpreter (created once under ``.cache/authsome-reference/``),
or ``None`` with the reason when no Python 3.13+ exists on this machine. Nothing of authsome is copied into this
repository: the tests read its files from the installed package.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VERSIONS = ("0.2.3", "0.7.2")
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "authsome-reference"


def python313() -> str | None:
    """A Python >= 3.13 interpreter: ``python3.13`` on PATH or pyenv's ``versions/3.13*``."""
    root = (
        subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        if shutil.which("pyenv")
        else ""
    )
    candidates = [
        shutil.which("python3.13"),
        *sorted(glob.glob(f"{root or os.path.expanduser('~/.pyenv')}/versions/3.1[3-9]*/bin/python3")),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 13)"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def reference_python(version: str) -> Path:
    """The interpreter of a venv holding ``authsome==version``; skips the test when no Python 3.13 exists."""
    venv = CACHE / version
    python = venv / "bin" / "python"
    if python.exists() and (venv / ".installed").exists():
        return python
    base = python313()
    if base is None:
        pytest.skip("authsome itself needs Python >= 3.13 and none is installed here (python3.13 or pyenv 3.13)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"authsome=={version}"], check=True, capture_output=True)
    (venv / ".installed").write_text(version)
    return python


def package_dir(version: str) -> Path:
    """Where the installed authsome package of ``version`` lives (its bundled provider files are under it)."""
    python = reference_python(version)
    out = subprocess.run(
        [str(python), "-c", "import authsome, os; print(os.path.dirname(authsome.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def authsome_cli(version: str) -> Path:
    """The ``authsome`` command of that version's venv."""
    return reference_python(version).parent / "authsome"


__all__ = ["CACHE", "VERSIONS", "authsome_cli", "package_dir", "python313", "reference_python", "sys"]
