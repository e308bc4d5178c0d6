"""The library surface and the guarantees that hold across commands."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

import authsome
from authsome import Authsome, CredentialMissing
from authsome.store.credentials import CredentialStore

KEY = "sk-proj-LIBRARYKEY0123456789abcdef"


def test_public_surface_is_exactly_all() -> None:
    assert authsome.__all__ == sorted(authsome.__all__)
    public = {n for n, v in vars(authsome).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(authsome.__all__)


def test_library_login_headers_and_export() -> None:
    auth = Authsome(env={"OPENAI_API_KEY": KEY})
    info = auth.login("openai")
    assert info.status == "connected"
    assert auth.headers_for("openai") == {"Authorization": f"Bearer {KEY}"}
    assert auth.export("openai", fmt="env") == f"OPENAI_API_KEY={KEY}"
    assert KEY not in repr(auth.credential("openai"))


def test_failure_midway_through_login_leaves_store_bytes_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authsome(env={"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": "sk-ant-api03-ZZZZ0123456789"})
    auth.login("openai")
    before = auth.store.vault.path.read_bytes()
    original = CredentialStore.save

    def save_then_fail(self: CredentialStore, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(CredentialStore, "save", save_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        auth.login("anthropic")
    assert auth.store.vault.path.read_bytes() == before
    monkeypatch.undo()
    with pytest.raises(CredentialMissing):
        auth.get("anthropic")


def test_audit_records_login_export_and_reveal_without_secrets() -> None:
    auth = Authsome(env={"OPENAI_API_KEY": KEY})
    auth.login("openai")
    auth.export("openai")
    auth.reveal("openai", field="api_key")
    events = [r["event"] for r in auth.log(provider="openai")]
    assert events == ["login", "export", "reveal"]
    assert KEY not in auth.audit.path.read_text()
    assert auth.verify_log().ok


def test_refresh_tokens_never_revealed() -> None:
    auth = Authsome(env={"OPENAI_API_KEY": KEY})
    auth.login("openai")
    with pytest.raises(authsome.UsageError, match="refresh_token"):
        auth.reveal("openai", field="refresh_token")


def test_everyday_commands_do_not_import_heavy_stacks(tmp_path: Path) -> None:
    code = (
        "import atexit, sys\n"
        "def report():\n"
        "    names = ('mitmproxy', 'authlib', 'httpx', 'cryptography', 'rich', 'keyring')\n"
        "    heavy = [m for m in names if m in sys.modules]\n"
        "    sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
        "atexit.register(report)\n"
        "from authsome.cli.main import main\n"
        "main(['list', '--json'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stderr, proc.stderr
