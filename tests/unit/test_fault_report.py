"""Fault hits in the markdown report: one row per scenario and rule in "Faults served", and a line in the failure."""

from __future__ import annotations

from qa.report.markdown import fault_rows, render_markdown
from qa.report.summary import Failure, ScenarioResult
from tests.unit.test_report_render import assert_tables_well_formed, make_summary, table_rows

HITS = [
    {"source": "homeserver", "rule": "limited", "action": "status", "method": "PUT", "path": "/send/m.room.message/t1",
     "status": 429, "what": "PUT /send/ #1-#2: 429 M_LIMIT_EXCEEDED retry_after_ms=700"},
    {"source": "homeserver", "rule": "limited", "action": "status", "method": "PUT", "path": "/send/m.room.message/t1",
     "status": 429, "what": "PUT /send/ #1-#2: 429 M_LIMIT_EXCEEDED retry_after_ms=700"},
    {"source": "provider", "rule": "fault|cut", "action": "stream cut after 2 chunk(s)", "method": "POST",
     "path": "/v1/chat/completions", "status": 200, "what": "stream cut after 2 chunk(s)"},
]


def test_hits_are_grouped_per_source_and_rule() -> None:
    rows = fault_rows(ScenarioResult(id="s", title="t", status="pass", faultHits=HITS))
    assert [(r["source"], r["rule"], r["hits"], r["paths"]) for r in rows] == [
        ("homeserver", "limited", 2, ["PUT /send/m.room.message/t1"]),
        ("provider", "fault|cut", 1, ["POST /v1/chat/completions"])]


def test_report_shows_the_faults_beside_the_scenario() -> None:
    failed = ScenarioResult(id="matrix-send-rate-limited", title="t", status="fail", faultHits=HITS,
                            failure=Failure(step=2, stepKind="expect_faults", expected="x", seen=["y"]))
    quiet = ScenarioResult(id="matrix-dm-basic", title="t", status="pass")
    markdown = render_markdown(make_summary([failed, quiet]))
    assert_tables_well_formed(markdown)
    section = markdown.split("## Faults served", 1)[1].split("\n## ", 1)[0]
    rows = table_rows(section)
    assert [[cell.strip() for cell in row[:4]] for row in rows[2:]] == [
        ["`matrix-send-rate-limited`", "homeserver", "`limited`", "2"],
        ["`matrix-send-rate-limited`", "provider", "`fault\\|cut`", "1"]]
    assert "**Faults served:** limited ×2 (PUT /send/ #1-#2: 429 M_LIMIT_EXCEEDED retry_after_ms=700); " \
           "fault|cut ×1" in markdown


def test_no_faults_no_section() -> None:
    assert "Faults served" not in render_markdown(make_summary([ScenarioResult(id="a", title="t", status="pass")]))
