from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from authsome.paths import Home
from authsome.store import audit, keysource
from authsome.store.audit import AuditLog
from authsome.store.vault import Transaction, Vault


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


def test_a_trail_written_with_spaced_sorted_lines_still_verifies_and_grows(tmp_path: Path) -> None:
    """Lines used to be written as ``json.dumps(record, sort_keys=True)``; a trail from then keeps verifying, and new
    records chain onto its last line."""
    log = make_log(tmp_path / "h")
    fill(log, 3)
    old_style = [json.dumps(json.loads(line), sort_keys=True) for line in log.path.read_text().splitlines()]
    log.path.write_text("\n".join(old_style) + "\n")
    assert ", " in old_style[0] and log.verify().ok
    fill(log, 2)
    lines = log.path.read_text().splitlines()
    assert lines[:3] == old_style and len(lines) == 5
    assert json.loads(lines[3])["prev"] == json.loads(lines[2])["mac"]
    assert log.verify().ok and log.verify().records == 5


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


# -- group commit ----------------------------------------------------------------------------------------------------


class Counting:
    """Counts fsyncs of the trail and head updates in the store."""

    def __init__(self, log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsyncs = 0
        self.heads: list[int] = []
        real_fsync, real_write = audit.os.fsync, Transaction.write

        def fsync(fd: int) -> None:
            self.fsyncs += 1
            real_fsync(fd)

        def write(txn: Transaction, key: str, doc: dict[str, Any], secrets: dict[str, Any]) -> None:
            if key == audit.HEAD_KEY:
                self.heads.append(doc["seq"])
            real_write(txn, key, doc, secrets)

        monkeypatch.setattr(audit.os, "fsync", fsync)
        monkeypatch.setattr(Transaction, "write", write)


def test_submitted_records_are_written_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(tmp_path / "h")
    log.append("login")  # loads the key; one batch of one
    counting = Counting(log, monkeypatch)
    for i in range(300):
        log.submit("request", path=f"/v1/{i}")
    log.flush()
    assert [r["seq"] for r in log.records()] == list(range(1, 302))
    assert [r["path"] for r in list(log.records())[1:]] == [f"/v1/{i}" for i in range(300)]  # in order
    assert log.verify().ok
    assert 1 <= counting.fsyncs <= 3 and len(counting.heads) == counting.fsyncs  # not one per record
    assert counting.heads[-1] == 301


def test_a_batch_is_bounded_in_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_BATCH", 10)
    log = make_log(tmp_path / "h")
    log.append("login")
    counting = Counting(log, monkeypatch)
    for i in range(35):
        log.submit("request", path=f"/v1/{i}")
    log.flush()
    assert counting.fsyncs >= 4 and log.verify().records == 36


def test_a_queued_record_reaches_the_disk_without_a_flush(tmp_path: Path) -> None:
    log = make_log(tmp_path / "h")
    log.append("login")
    start = time.monotonic()
    log.submit("request", path="/v1/models")
    while len(list(log.records())) < 2:
        assert time.monotonic() - start < 5, "the queued record was never written"
        time.sleep(0.005)
    assert log.verify().ok


def test_flush_does_not_wait_out_the_delay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_DELAY", 60.0)
    log = make_log(tmp_path / "h")
    log.append("login")
    log.submit("request", path="/v1/models")
    start = time.monotonic()
    log.flush()
    assert time.monotonic() - start < 5 and log.verify().records == 2


def test_a_failed_batch_is_reported_and_flush_still_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[BaseException] = []
    home = Home.resolve(tmp_path / "h")
    log = AuditLog(
        Vault(home.profile_dir("default"), "default", lambda: keysource.select(home, {})), on_error=errors.append
    )

    def broken(entries: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log, "append_many", broken)
    log.submit("request", path="/v1/models")
    log.flush()
    assert [type(e) for e in errors] == [OSError]


def test_a_line_cut_short_by_a_crash_is_not_part_of_the_chain(tmp_path: Path) -> None:
    log = make_log(tmp_path / "h")
    fill(log, 3)
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq": 4, "event": "requ')  # the process died inside write()
    result = log.verify()
    assert result.ok and result.records == 3
    assert len(list(log.records())) == 3
    fill(log, 1)  # the next batch cuts the piece off and continues the chain
    assert [r["seq"] for r in log.records()] == [1, 2, 3, 4] and log.verify().ok


def test_the_head_only_moves_forward(tmp_path: Path) -> None:
    """Heads are written after the trail's lock is released: a late, older head never replaces a newer one."""
    log = make_log(tmp_path / "h")
    fill(log, 5)
    with log.vault.transaction() as txn:
        txn.write(audit.HEAD_KEY, {"seq": 9, "mac": "f" * 64}, {})
    fill(log, 1)
    assert (log.vault.read(audit.HEAD_KEY) or {})["seq"] == 9


def test_appending_while_holding_the_store_lock_does_not_deadlock(tmp_path: Path) -> None:
    """A token refresh holds the store's lock and appends; a batch being written meanwhile must not wait for it
    while holding the trail's lock (each would wait for the other)."""
    log = make_log(tmp_path / "h")
    log.append("login")
    with log.vault.lock():
        writer = threading.Thread(target=log.append, args=("request",), kwargs={"path": "/v1/a"}, daemon=True)
        writer.start()  # writes its line, then waits for the store's lock (held here) to move the head
        deadline = time.monotonic() + 5
        while len(list(log.records())) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        log.append("refresh")  # before: waited for the trail's lock, held by the batch waiting for ours (30 s, error)
    writer.join(5)
    assert [r["event"] for r in log.records()] == ["login", "request", "refresh"] and log.verify().ok


WRITER = """
import sys
from pathlib import Path
from authsome.paths import Home
from authsome.store import keysource
from authsome.store.audit import AuditLog
from authsome.store.vault import Vault
home = Home.resolve(Path(sys.argv[1]))
log = AuditLog(Vault(home.profile_dir("default"), "default", lambda: keysource.select(home, {})))
log.append("start")
print("ready", flush=True)
i = 0
while True:
    log.submit("request", provider="openai", method="GET", host="api.openai.com", path=f"/v1/{i}")
    i += 1
"""


def test_kill_9_mid_burst_loses_only_unwritten_records(tmp_path: Path) -> None:
    root = tmp_path / "h"
    make_log(root).append("login")  # the home and its key exist before the writer starts
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        log = make_log(root)
        deadline = time.monotonic() + 30
        while log.path.stat().st_size < 400_000:  # over a thousand records on disk, more in flight
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    result = log.verify()
    assert result.ok, result.problem
    assert result.records > 1000
    log.append("after")  # the chain goes on from what remains
    records = list(log.records())
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)) and log.verify().ok
