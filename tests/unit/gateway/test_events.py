"""The gateway's lines: one per decision, JSON with --json, a locked-out address reported once a minute."""

from __future__ import annotations

import json

from authsome.gateway.events import EventLog, GatewayReporter
from authsome.proxy.auth import Denied
from authsome.proxy.report import RequestRecord


def test_one_line_per_finished_request_in_text_and_json() -> None:
    lines: list[str] = []
    record = RequestRecord("injected", "GET", "api.openai.com", 443, "/v1/models", "openai", "default", "rule x", 200)
    record.agent, record.duration_ms = "alice", 12.5
    audited: list[dict[str, object]] = []
    reporter = GatewayReporter(EventLog(write=lines.append), audited.append)
    reporter.decided(record)
    assert lines == []  # the line comes with the outcome
    reporter.finished(record)
    reporter.close()
    assert lines == ["authsome gateway: alice injected openai/default GET api.openai.com/v1/models -> 200 (12.5 ms)"]
    assert audited[0]["agent"] == "alice" and audited[0]["decision"] == "injected"
    json_lines: list[str] = []
    EventLog(json_lines=True, write=json_lines.append).request(record)
    event = json.loads(json_lines[0])
    assert (event["event"], event["agent"], event["status"], event["path"]) == ("request", "alice", 200, "/v1/models")


def test_a_runs_records_carry_no_agent_field() -> None:
    record = RequestRecord("passthrough", "GET", "example.org", 443, "/", reason="no-route")
    assert "agent" not in record.to_dict()


def test_an_agents_record_carries_every_field_of_the_request() -> None:
    from dataclasses import fields

    record = RequestRecord("injected", "GET", "api.openai.com", 443, "/v1", "openai", "work", "r", 200, 1.5, "alice")
    assert set(record.to_dict()) == {f.name for f in fields(record)} - {"answered"}  # none forgotten
    assert record.to_dict()["agent"] == "alice" and record.to_dict()["connection"] == "work"


def test_denials_are_logged_and_a_lockout_once_a_minute() -> None:
    lines: list[str] = []
    log = EventLog(json_lines=True, write=lines.append)
    log.denied("10.0.0.2", "alice", Denied(407, "agent alice was revoked", "agent_revoked"))
    for _ in range(5):
        log.denied("10.0.0.9", None, Denied(429, "too many wrong proxy credentials from 10.0.0.9", "rate_limited", 6))
    events = [json.loads(line) for line in lines]
    assert [(e["status"], e["peer"], e["agent"]) for e in events] == [
        (407, "10.0.0.2", "alice"),
        (429, "10.0.0.9", None),
    ]
    text: list[str] = []
    EventLog(write=text.append).denied(None, None, Denied(407, "unknown agent or wrong token"))
    assert text == ["authsome gateway: denied -: 407 unknown agent or wrong token"]
