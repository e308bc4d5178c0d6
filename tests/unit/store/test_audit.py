from __future__ import annotations

import json
from pathlib import Path

from authsome.paths import Home
from authsome.store import keysource
from authsome.store.audit import AuditLog
from authsome.store.vault import Vault


def make_log(root: Path) -> AuditLog:
    home = Home.resolve(root)
    return AuditLog(Vault(home.profile_dir("default"), "default", lambda: keysource.select(home, {})))


def fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append("request", provider="openai", method="GET", host="api.openai.com", path=f"/v1/{i}")


def test_append_and_verify(tmp_path: Path) -> None:
    log = make_log(tmp_path / "h")
    fill(log)
    records = list(log.records())
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[1]["prev"] == records[0]["mac"]
    assert log.verify().ok and log.verify().records == 5
    assert (log.path.stat().st_mode & 0o777) == 0o600


def test_edit_is_detected(tmp_path: Path) -> None:
    log = make_log(tmp_path / "h")
    fill(log)
    lines = log.path.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["path"] = "/v1/innocent"
    lines[2] = json.dumps(rec, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    result = log.verify()
    assert not result.ok and "seq 3" in (result.problem or "") and "altered" in (result.problem or "")


def test_deleted_middle_line_is_detected(tmp_path: Path) -> None:
    log = make_log(tmp_path / "h")
    fill(log)
    lines = log.path.read_text().splitlines()
    del lines[1]
    log.path.write_text("\n".join(lines) + "\n")
    assert not log.verify().ok


def test_truncated_tail_is_detected(tmp_path: Path) -> None:
    log = make_log(tmp_path / "h")
    fill(log)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:3]) + "\n")
    result = log.verify()
    assert not result.ok and "removed" in (result.problem or "")


def test_recomputed_chain_without_the_key_fails(tmp_path: Path) -> None:
    """Someone who rewrites a record and recomputes plain SHA-256 hashes cannot forge the keyed MAC."""
    import hashlib

    log = make_log(tmp_path / "h")
    fill(log, 2)
    lines = [json.loads(x) for x in log.path.read_text().splitlines()]
    lines[1]["path"] = "/v1/forged"
    body = {k: v for k, v in lines[1].items() if k != "mac"}
    lines[1]["mac"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    log.path.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    assert not log.verify().ok


def test_chain_continues_across_instances(tmp_path: Path) -> None:
    fill(make_log(tmp_path / "h"), 2)
    log = make_log(tmp_path / "h")
    fill(log, 2)
    assert [r["seq"] for r in log.records()] == [1, 2, 3, 4] and log.verify().ok
