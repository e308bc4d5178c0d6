"""The registry: bundled providers, user files that override them, register/unregister and broken files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from authsome.errors import ProviderNotFound, UsageError
from authsome.providers import Registry


def acme(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "name": "acme",
        "display_name": "Acme",
        "auth_type": "api_key",
        "api_key": {"header_name": "X-Acme-Key", "header_prefix": "", "env_var": "ACME_API_KEY"},
        "host_url": "api.acme.test",
    }
    data.update(overrides)
    return data


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "providers"
    d.mkdir(mode=0o700)
    return d


def test_bundled_providers_are_listed_sorted(user_dir: Path) -> None:
    reg = Registry(user_dir)
    names = reg.names()
    assert names == sorted(names)
    assert {"openai", "anthropic", "github", "google"} <= set(names)
    assert [p.name for p in reg.all()] == names
    assert reg.get("openai").source == "bundled" and not reg.is_user("openai")


def test_missing_user_dir_is_fine(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "does-not-exist")
    assert "openai" in reg.names() and reg.problems() == []


def test_unknown_provider_suggests_a_close_name(user_dir: Path) -> None:
    with pytest.raises(ProviderNotFound) as info:
        Registry(user_dir).get("opena")
    err = info.value
    assert err.exit_code == 3
    assert err.message == "unknown provider 'opena'"
    assert "did you mean 'openai'" in (err.hint or "") and "authsome list" in (err.hint or "")


def test_unknown_provider_without_close_name_still_points_at_list(user_dir: Path) -> None:
    with pytest.raises(ProviderNotFound) as info:
        Registry(user_dir).get("zzzzzzzz")
    assert info.value.hint == "run `authsome list` to see every provider"


def test_register_writes_a_private_file_and_the_provider_is_usable(user_dir: Path, tmp_path: Path) -> None:
    reg = Registry(user_dir)
    prov = reg.register(write(tmp_path / "acme-def.json", acme()))
    target = user_dir / "acme.json"
    assert prov.name == "acme" and prov.source == "user" and prov.path == target
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert json.loads(target.read_text())["api_key"]["header_name"] == "X-Acme-Key"
    assert reg.is_user("acme") and "acme" in reg.names()
    assert Registry(user_dir).get("acme").header("k") == ("X-Acme-Key", "k")


def test_register_creates_the_user_dir_private(tmp_path: Path) -> None:
    user_dir = tmp_path / "home" / "providers"
    (tmp_path / "home").mkdir()
    Registry(user_dir).register(write(tmp_path / "acme.json", acme()))
    assert stat.S_IMODE(os.stat(user_dir).st_mode) == 0o700


def test_register_refuses_to_replace_a_user_provider_without_force(user_dir: Path, tmp_path: Path) -> None:
    reg = Registry(user_dir)
    reg.register(write(tmp_path / "a.json", acme()))
    with pytest.raises(UsageError, match="already registered") as info:
        reg.register(write(tmp_path / "b.json", acme(display_name="Acme 2")))
    assert "--force" in (info.value.hint or "")
    assert reg.get("acme").display_name == "Acme"
    reg.register(tmp_path / "b.json", force=True)
    assert reg.get("acme").display_name == "Acme 2"


def test_user_file_overrides_a_bundled_provider(user_dir: Path, tmp_path: Path) -> None:
    reg = Registry(user_dir)
    custom = acme(name="openai", display_name="My OpenAI", host_url="https://openai.corp.test/v1")
    reg.register(write(tmp_path / "openai.json", custom))
    prov = reg.get("openai")
    assert prov.source == "user" and prov.display_name == "My OpenAI"
    assert reg.is_user("openai")
    assert [p.display_name for p in reg.all() if p.name == "openai"] == ["My OpenAI"]
    assert reg.unregister("openai") is True
    assert reg.get("openai").source == "bundled"


def test_unregister_without_a_user_file_returns_false(user_dir: Path) -> None:
    reg = Registry(user_dir)
    assert reg.unregister("openai") is False
    assert reg.unregister("../../etc/passwd") is False
    assert reg.get("openai").source == "bundled"


def test_register_rejects_invalid_definitions_and_writes_nothing(user_dir: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "acme.json", acme(host_url="regex:.*"))
    with pytest.raises(UsageError, match=r"provider file .*acme\.json: host_url: regex"):
        Registry(user_dir).register(bad)
    assert list(user_dir.iterdir()) == []


def test_register_reports_the_json_line_of_a_syntax_error(user_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "acme.json"
    bad.write_text('{\n  "schema_version": 1,\n  "name": "acme",\n  oops\n}\n')
    with pytest.raises(UsageError, match=r"acme\.json: invalid JSON at line 4"):
        Registry(user_dir).register(bad)


def test_register_missing_file(user_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read provider file"):
        Registry(user_dir).register(tmp_path / "nope.json")


def test_broken_user_files_are_skipped_and_reported(user_dir: Path) -> None:
    write(user_dir / "good.json", acme(name="good"))
    (user_dir / "syntax.json").write_text("{")
    write(user_dir / "invalid.json", acme(name="invalid", flow="pkce"))
    write(user_dir / "mismatch.json", acme(name="other"))
    (user_dir / "notes.txt").write_text("ignored")
    reg = Registry(user_dir)
    assert "good" in reg.names()
    assert not {"syntax", "invalid", "other", "mismatch"} & set(reg.names())
    problems = {p.name: reason for p, reason in reg.problems()}
    assert set(problems) == {"syntax.json", "invalid.json", "mismatch.json"}
    assert "invalid JSON at line 1" in problems["syntax.json"]
    assert "flow: 'pkce' is not valid" in problems["invalid.json"]
    assert "does not match the file name" in problems["mismatch.json"]
    assert all("\n" not in reason for reason in problems.values())


def test_a_broken_override_falls_back_to_the_bundled_provider(user_dir: Path) -> None:
    (user_dir / "openai.json").write_text("not json")
    reg = Registry(user_dir)
    assert reg.get("openai").source == "bundled"
    assert [p.name for p, _ in reg.problems()] == ["openai.json"]
