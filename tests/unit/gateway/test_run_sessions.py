"""A run served by the gateway, over the real control socket: its agent, its audit context, its lines, its end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authsome.gateway.client import RunLease, lease_for_run
from authsome.gateway.events import EventLog, GatewayReporter
from authsome.gateway.runs import ControlServer, RunAgents
from authsome.gateway.state import GatewayFiles
from authsome.policy import Policy
from authsome.proxy.report import Reporter, RequestRecord

FACTS = {"listen": "127.0.0.1:8199", "ca_cert": "/nonexistent/mitmproxy-ca-cert.pem", "upstream": None}


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[GatewayFiles, RunAgents]]:
    files = GatewayFiles(tmp_path / "gateway").ensure()
    runs = RunAgents()
    server = ControlServer(files.control, runs, lambda: FACTS)
    server.start()
    yield files, runs
    server.stop()


def lease(files: GatewayFiles) -> RunLease:
    got = lease_for_run(files, ["openai"], {"openai": ["default"]}, Policy())
    assert got is not None
    return got


def test_a_runs_records_carry_its_id_and_program_and_nothing_else_it_says(
    control: tuple[GatewayFiles, RunAgents],
) -> None:
    files, runs = control
    audited: list[dict[str, object]] = []
    reporter = GatewayReporter(EventLog(write=lambda line: None), audited.append, runs)
    run = lease(files)
    context = {"run_id": "feedc0ffee12", "command": "curl", "agent": "alice", "decision": "injected"}
    run.begin(context, Reporter())
    record = RequestRecord("refused", "GET", "api.openai.com", 443, "/v1/files", "openai", "default", "policy", 403)
    record.agent = run.user
    reporter.finished(record)
    other = RequestRecord("injected", "GET", "api.openai.com", 443, "/v1/models", "openai", "default")
    other.agent = "alice"  # a stored agent: no run context
    reporter.finished(other)
    run.close()
    assert audited[0]["run_id"] == "feedc0ffee12" and audited[0]["command"] == "curl"
    assert (audited[0]["agent"], audited[0]["decision"]) == (run.user, "refused")  # the gateway's, not the run's word
    assert "run_id" not in audited[1]


def test_a_run_gets_its_warnings_always_and_its_decision_lines_with_verbose(
    control: tuple[GatewayFiles, RunAgents],
) -> None:
    files, runs = control
    reporter = GatewayReporter(EventLog(write=lambda line: None), None, runs)
    shown: dict[bool, list[str]] = {True: [], False: []}
    for verbose in (True, False):
        run = lease(files)
        run.begin({"run_id": "r", "command": "sh"}, Reporter(verbose=verbose, write=shown[verbose].append))
        record = RequestRecord("ambiguous", "GET", "api.openai.com", 443, "/v1/models", reason="openai, twin")
        record.agent = run.user
        for _ in range(2):
            reporter.decided(record)
        run.close()  # returns once every line the gateway had for the run was shown
    warning = "authsome: ambiguous host match: api.openai.com claimed by openai, twin"  # once, as from a run's own
    line = "authsome: ambiguous   - GET api.openai.com/v1/models (openai, twin)"  # once per request
    assert shown[True] == [warning, line, line]
    assert shown[False] == [warning]


def test_the_agent_ends_before_close_returns(control: tuple[GatewayFiles, RunAgents]) -> None:
    files, runs = control
    run = lease(files)
    assert runs.get(run.user) is not None
    run.close()
    assert runs.get(run.user) is None  # no window in which the ended run's token still opens the gateway
    run.close()  # again: nothing to do


def test_a_runs_records_are_written_before_close_returns(tmp_path: Path) -> None:
    """The gateway writes its queued audit records (the run's last ones among them) before it lets the run go."""
    files = GatewayFiles(tmp_path / "gateway").ensure()
    runs = RunAgents()
    written: list[str] = []
    on_disk: list[dict[str, object]] = []
    queued: list[dict[str, object]] = []
    reporter = GatewayReporter(EventLog(write=lambda line: None), queued.append, runs)

    def flush() -> None:  # what the audit trail's writer does: everything queued goes to disk
        on_disk.extend(queued)
        queued.clear()
        written.append("flushed")

    server = ControlServer(files.control, runs, lambda: FACTS, flush)
    server.start()
    try:
        run = lease(files)
        run.begin({"run_id": "r", "command": "curl"}, Reporter())
        record = RequestRecord("injected", "GET", "api.openai.com", 443, "/v1/models", "openai", "default")
        record.agent = run.user
        reporter.finished(record)
        run.close()
        assert written == ["flushed"]
        assert [(r["agent"], r["run_id"]) for r in on_disk] == [(run.user, "r")]
    finally:
        server.stop()
