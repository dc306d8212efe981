"""Reports rendered from hand-built summaries: markdown, JUnit, CI step summary, files on disk, redaction."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from qa.kernel.errors import ConfigError
from qa.report import writer
from qa.report.ci_summary import render_ci_summary, write_github_step_summary
from qa.report.junit import render_junit
from qa.report.markdown import fence_open_after, fence_states, human_ms, percentile, render_markdown
from qa.report.summary import (
    SCHEMA,
    Counts,
    Environment,
    Failure,
    HomeserverInfo,
    NegativeCheck,
    ProviderInfo,
    RunError,
    ScenarioResult,
    StepResult,
    Summary,
    Timings,
    count,
)
from qa.report.writer import load_summary, sanitize_events, write_reports
from qa.shared.redact import REDACTED, redact, scan_for_secrets

# ---------------------------------------------------------------------------------------------------------
# Hand-built runs


def make_summary(scenarios: list[ScenarioResult], **overrides: Any) -> Summary:
    counts = count(scenarios)
    fields: dict[str, Any] = {
        "runId": "20250101T120000Z-ab12",
        "status": "pass" if counts.failed == 0 else "fail",
        "exitCode": 0 if counts.failed == 0 else 1,
        "startedAt": "2025-01-01T12:00:00Z",
        "finishedAt": "2025-01-01T12:00:42Z",
        "command": ["matrix-qa", "run", "--profile", "fast"],
        "environment": Environment(
            homeserver=HomeserverInfo(kind="synapse", version="1.120.2", serverName="qa.localhost"),
            provider=ProviderInfo(mode="mock", model="mock-gpt", baseUrlHost="127.0.0.1:38211"),
            profile="fast",
            python="3.11.7",
            platform="linux-x86_64",
            matrixQaVersion="0.1.0",
        ),
        "counts": counts,
        "timings": Timings(
            homeserverBootMs=1234.0, providerBootMs=12.5, botBootMs=850.0, scenariosMs=40_100.0, totalMs=42_000.0
        ),
        "scenarios": scenarios,
        "artifacts": {"output log": "matrix-qa-output.log"},
    }
    fields.update(overrides)
    return Summary(**fields)


def passing_run() -> Summary:
    return make_summary(
        [
            ScenarioResult(
                id="matrix-thread-follow-up",
                title="Threaded mention gets a reply in the same thread",
                status="pass",
                durationMs=1234.0,
                details="reply in thread",
                replyLatenciesMs=[100.0, 200.0, 300.0, 400.0],
            ),
            ScenarioResult(
                id="matrix-dm-basic", title="DM reply", status="pass", durationMs=640.0, replyLatenciesMs=[1000.0]
            ),
            ScenarioResult(id="matrix-e2ee", title="Encrypted room", status="skip", details="no libolm"),
        ]
    )


SEEN = [
    "m.room.message from @driver:qa.localhost body='a | b'",
    "m.room.message from @bot:qa.localhost body='line one\nline two'",
]


def failing_run() -> Summary:
    return make_summary(
        [
            ScenarioResult(id="matrix-dm-basic", title="DM reply", status="pass", durationMs=640.0),
            ScenarioResult(
                id="matrix-mention-gating",
                title="Mention | gating\nsecond line",
                status="fail",
                durationMs=30_500.0,
                details="no reply | timeout\nafter 30s",
                source="scenarios/mention-gating.yaml",
                steps=[
                    StepResult(index=0, kind="send", status="pass"),
                    StepResult(index=1, kind="expect_reply", status="fail", detail="waited 30 s"),
                ],
                failure=Failure(
                    step=1,
                    stepKind="expect_reply",
                    expected="a reply containing `tok-123` in thread $root",
                    seen=SEEN,
                    hints=["the bot dropped the event: mention-required"],
                ),
                negativeChecks=[
                    NegativeCheck(
                        step=2,
                        triggerEventId="$trigger",
                        expectedReason="mention-required",
                        botReason="mention-required",
                        controlEventId="$control",
                        controlReplyEventId="$controlReply",
                    ),
                    NegativeCheck(
                        step=4,
                        triggerEventId="$t2",
                        expectedReason="bot-sender-blocked",
                        botReason=None,
                        controlEventId="$c2",
                        unwantedReplies=["$oops1", "$oops2"],
                    ),
                ],
                artifacts={"trace": "scenarios/matrix-mention-gating/trace.jsonl"},
            ),
        ]
    )


PROBE_ERROR = "session file locked (timeout 25ms): pid=4242 alive=true ageMs=31 /tmp/s/abc.jsonl.lock"


def lock_run() -> Summary:
    run = passing_run()
    return run.model_copy(
        update={
            "status": "fail",
            "exitCode": 1,
            "lock": {
                "scope": "attempt",
                "settings": {"acquireTimeoutMs": 25, "staleMs": 30000, "maxHoldMs": 60000},
                "sources": {"trace": "bot-trace.jsonl"},
                "verdict": "fail",
                "reasons": ["lock held during model I/O for 812.0 ms in session !room:qa.localhost"],
                "turns": [
                    {
                        "session": "!roomAAAAAAAAAAAAAAAAAA:qa.localhost/thread/$threadroot123456:qa.localhost",
                        "attempt": "1",
                        "outcome": "replied",
                        "summary": "acquire → model → append | release",
                        "longestHoldMs": 900.0,
                        "overlapMs": 812.0,
                    },
                    {"session": "!short:x"},  # a half-built turn: renders without crashing
                ],
                "longestHoldMs": 900.0,
                "totalOverlapMs": 812.0,
                "turnCount": 2,
                "modelRequests": 1,
                "probes": [
                    {"session": "!short:x", "acquiredElapsedMs": 1.2},
                    {"session": "!short:x", "timeoutElapsedMs": 26.0, "error": PROBE_ERROR, "duringModelIo": True},
                ],
            },
        }
    )


def infra_error_run() -> Summary:
    return make_summary(
        [],
        status="error",
        exitCode=2,
        counts=Counts(),
        errors=[
            RunError(
                component="homeserver",
                message="synapse exited with code 1\nTraceback: <module> | boom \x1b[31m",
                log="homeserver.log",
            )
        ],
    )


# ---------------------------------------------------------------------------------------------------------
# Markdown helpers


def table_rows(markdown: str) -> list[list[str]]:
    """Every table as rows of cells, split on unescaped pipes, outside fenced blocks."""
    lines = markdown.splitlines()
    tables: list[list[str]] = []
    for line, in_fence in zip(lines, fence_states(lines), strict=True):
        if not in_fence and line.startswith("|"):
            tables.append(re.split(r"(?<!\\)\|", line.strip())[1:-1])
    return tables


def assert_tables_well_formed(markdown: str) -> None:
    lines = markdown.splitlines()
    block: list[str] = []
    states = fence_states(lines)
    for line, in_fence in [*zip(lines, states, strict=True), ("", False)]:
        if not in_fence and line.startswith("|"):
            block.append(line)
            continue
        if block:
            widths = {len(re.split(r"(?<!\\)\|", row.strip())[1:-1]) for row in block}
            assert len(widths) == 1, "ragged table:\n" + "\n".join(block)
            assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", block[1]), f"no delimiter row:\n{block[1]}"
            block = []


# ---------------------------------------------------------------------------------------------------------
# Markdown


def test_passing_run_has_title_environment_scenarios_and_timings() -> None:
    md = render_markdown(passing_run())

    assert md.splitlines()[0] == "# ✅ matrix-qa: pass — 2 passed, 0 failed, 1 skipped of 3"
    assert "| Homeserver | synapse 1.120.2 (`qa.localhost`) |" in md
    assert "| Provider | mock · model `mock-gpt` · `127.0.0.1:38211` |" in md
    assert "| `matrix-thread-follow-up` | Threaded mention gets a reply in the same thread | ✅ pass | 1.23 s |" in md
    assert "| `matrix-e2ee` | Encrypted room | ⏭️ skip | 0.0 ms | no libolm |" in md
    assert "| Homeserver boot | 1.23 s |" in md
    assert "| Report | — |" in md
    # Latencies 100..400 and 1000: nearest-rank p50 is 300, p95 is 1000.
    assert "Reply latency over 5 replies: p50 300 ms · p95 1.00 s" in md
    assert "## Failures" not in md
    assert "Lock-timing evidence" not in md
    assert_tables_well_formed(md)


def test_failing_run_shows_expected_and_seen_with_cells_escaped() -> None:
    md = render_markdown(failing_run())

    assert md.startswith("# ❌ matrix-qa: fail — 1 passed, 1 failed, 0 skipped of 2\n")
    assert_tables_well_formed(md)
    row = next(line for line in md.splitlines() if line.startswith("| `matrix-mention-gating`"))
    assert "Mention \\| gating<br>second line" in row
    assert "no reply \\| timeout after 30s" in row  # details are shortened to one line

    block = md.split("### ❌ matrix-mention-gating", 1)[1]
    assert "**Failing step:** 1 (`expect_reply`) — waited 30 s" in block
    assert "**Expected:** a reply containing `tok-123` in thread $root" in block
    # Seen lines are verbatim inside a fence: pipes unescaped, the embedded newline kept as a line break.
    assert "**Seen:**\n\n```text\nm.room.message from @driver:qa.localhost body='a | b'\n" in block
    assert "body='line one\nline two'\n```" in block
    assert "- the bot dropped the event: mention-required" in block
    # Artifacts are links, relative to the run's directory where the report lies.
    assert "**Artifacts:** [trace](scenarios/matrix-mention-gating/trace.jsonl)" in block
    # The first screen says what failed and what was seen, under the title.
    assert md.splitlines()[2:5] == ["**Not passing:**", "", "- ❌ `matrix-mention-gating`: step 1 (expect_reply) "
                                    "expected a reply containing `tok-123` in thread $root; saw m.room.message "
                                    "from @driver:qa.localhost body='a | b'"]


def test_negative_checks_table() -> None:
    md = render_markdown(failing_run())
    rows = [r for r in table_rows(md) if r and r[0].strip() == "`matrix-mention-gating`" and len(r) == 7]
    assert [c.strip() for c in rows[0]] == [
        "`matrix-mention-gating`",
        "2",
        "`$trigger`",
        "`mention-required`",
        "`mention-required`",
        # An id longer than a short one is cut the same way everywhere; the whole id is its title.
        '<code title="$controlReply">$controlR…</code>',
        "none",
    ]
    assert [c.strip() for c in rows[1]][5:] == ["❌ none to `$c2`", "❌ `$oops1`, `$oops2`"]


def test_seen_is_capped_to_the_last_lines() -> None:
    run = failing_run()
    run.scenarios[1].failure.seen = [f"event {i}" for i in range(50)]  # type: ignore[union-attr]
    md = render_markdown(run)
    assert "**Seen (20 of 50 lines, the first and the last; all are in the summary JSON):**" in md
    # The first lines stay (a crashed bot's first line says how it exited), then the last ones.
    block = md.split("**Seen (20 of 50", 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0]
    assert block.splitlines() == ["event 0", "event 1", "event 2", "… 30 lines left out …",
                                  *[f"event {i}" for i in range(33, 50)]]


def test_seen_with_backtick_fence_cannot_close_the_block_early() -> None:
    run = failing_run()
    run.scenarios[1].failure.seen = ["```", "# not a heading"]  # type: ignore[union-attr]
    md = render_markdown(run)
    lines = md.splitlines()
    states = dict(zip(range(len(lines)), fence_states(lines), strict=True))
    heading_line = lines.index("# not a heading")
    assert states[heading_line], "a seen line escaped its code block"


def test_lock_evidence_section() -> None:
    md = render_markdown(lock_run())
    section = md.split("## Lock-timing evidence", 1)[1]

    assert "**Verdict:** ❌ fail · lock scope `attempt`" in section
    assert "`acquireTimeoutMs=25` · `staleMs=30000` · `maxHoldMs=60000`" in section
    assert "**Longest hold:** 900 ms · **total overlap with model I/O:** 812 ms · 2 turns, 1 model request" in section
    assert "- lock held during model I/O for 812 ms" in section  # one duration formatter, also in reasons
    # Per turn, with units: waited, held, I/O, held during I/O (marked when it is not zero), outcome.
    assert "| Scenario | Turn | Attempt | Session | Waited for the lock | Longest hold | I/O | Held during I/O | " \
           "Outcome |" in section
    assert "| — | — | `1` | `!roomAAAA…/thread/$threadro…` | — | 900 ms | — | ❌ 812 ms | replied |" in section
    assert "| — | — | — | `!short` | — | — | — | — | — |" in section
    # Probes: the deciding value first, a long line wrapped before a field, the lock's own error text verbatim.
    assert "probe acquiredElapsedMs=1.2 session=!short\n" in section
    assert ("probe timeoutElapsedMs=26.0 duringModelIo=true session=!short\n"
            f'    error="{PROBE_ERROR}"') in section
    assert_tables_well_formed(md)


def test_probes_not_checked_are_counted_on_the_verdict_line() -> None:
    run = lock_run()
    probes = [*run.lock["probes"], {"session": "!short", "t": 1.0, "timeoutElapsedMs": 26.0,
                                    "note": "contention probe NOT CHECKED: it timed out after …"}]
    md = render_markdown(run.model_copy(update={"lock": {**run.lock, "probes": probes}}))
    assert "**Verdict:** ❌ fail · lock scope `attempt` · 1 contention probe NOT CHECKED (see Contention probes)" in md
    assert 'note="contention probe NOT CHECKED: it timed out after …"' in md
    assert "NOT CHECKED" not in render_markdown(lock_run())


def test_lock_section_tolerates_a_bare_object() -> None:
    md = render_markdown(passing_run().model_copy(update={"lock": {}}))
    assert "**Verdict:** ➖ none" in md
    assert "**Longest hold:** — · **total overlap with model I/O:** —" in md


def test_infra_error_run() -> None:
    md = render_markdown(infra_error_run())
    assert md.startswith("# ⚠️ matrix-qa: error — 0 passed, 0 failed, 0 skipped of 0, 1 run error\n")
    assert "No scenarios ran." in md
    errors = md.split("## ⚠️ Run errors", 1)[1]
    assert "### ⚠️ homeserver" in errors
    assert "```text\nsynapse exited with code 1\nTraceback: <module> | boom" in errors
    assert "Log: `homeserver.log`" in errors


def test_artifacts_listed() -> None:
    md = render_markdown(failing_run())
    artifacts = md.split("## Artifacts", 1)[1]
    assert "- output log: [matrix-qa-output.log](matrix-qa-output.log)" in artifacts
    # A failing scenario's artifacts are listed under its failure, not a second time here.
    assert "scenarios/matrix-mention-gating/trace.jsonl" not in artifacts
    run = passing_run()
    run.scenarios[0].artifacts = {"bot log": "scenarios/matrix-thread-follow-up (2)/bot.log"}
    artifacts = render_markdown(run).split("## Artifacts", 1)[1]
    assert "- `matrix-thread-follow-up`: [bot log](scenarios/matrix-thread-follow-up%20%282%29/bot.log)" in artifacts


@pytest.mark.parametrize(
    ("ms", "shown"),
    [(None, "—"), (1.234, "1.2 ms"), (850.0, "850 ms"), (1234.0, "1.23 s"), (125_000.0, "2 min 05 s")],
)
def test_human_ms(ms: float | None, shown: str) -> None:
    assert human_ms(ms) == shown


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


# ---------------------------------------------------------------------------------------------------------
# JUnit


def test_junit_counts_and_failure() -> None:
    root = ET.fromstring(render_junit(failing_run()))
    assert root.tag == "testsuite" and root.get("name") == "matrix-qa"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("2", "1", "0", "0")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"matrix-dm-basic", "matrix-mention-gating"}
    failed = cases["matrix-mention-gating"]
    assert failed.get("classname") == "matrix-qa.fast"
    assert failed.get("time") == "30.500"
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == "a reply containing `tok-123` in thread $root"
    assert failure.text is not None and "body='a | b'" in failure.text and "line one\nline two" in failure.text
    assert cases["matrix-dm-basic"].find("failure") is None


def test_junit_skipped() -> None:
    root = ET.fromstring(render_junit(passing_run()))
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "0", "1")
    skipped = next(c for c in root.iter("testcase") if c.get("name") == "matrix-e2ee").find("skipped")
    assert skipped is not None and skipped.get("message") == "no libolm"


def test_junit_infra_error_is_a_testcase_and_control_characters_do_not_break_xml() -> None:
    root = ET.fromstring(render_junit(infra_error_run()))
    assert (root.get("tests"), root.get("errors")) == ("1", "1")
    (case,) = root.iter("testcase")
    assert case.get("name") == "infrastructure"
    error = case.find("error")
    assert error is not None
    assert error.get("type") == "homeserver"
    assert error.text is not None and "boom" in error.text and "homeserver.log" in error.text


# ---------------------------------------------------------------------------------------------------------
# CI step summary


def big_markdown() -> str:
    scenarios = [
        ScenarioResult(id=f"scenario-{i:04d}", title="x" * 60, status="pass", durationMs=10.0) for i in range(400)
    ]
    return render_markdown(make_summary(scenarios, lock=lock_run().lock))


def test_ci_summary_is_unchanged_when_it_fits() -> None:
    md = render_markdown(passing_run())
    assert render_ci_summary(md, artifact_hint="the report artifact") == md


def test_ci_summary_trims_before_the_overflowing_section() -> None:
    md = big_markdown()
    assert len(md.encode()) > 20_000
    out = render_ci_summary(md, 20_000, artifact_hint="artifact `matrix-qa-report.md`")

    assert len(out.encode()) <= 20_000
    assert "artifact `matrix-qa-report.md`" in out
    assert "## Environment" in out
    # The scenario table alone is over the limit, so it is left out whole rather than cut mid-table.
    assert "## Scenarios" not in out and "scenario-0000" not in out
    assert_tables_well_formed(out)


def one_big_section() -> str:
    rows = "".join(f"| row {i} | {'y' * 40} |\n" for i in range(300))
    seen = "".join(f"seen line {i}\n" for i in range(300))
    return f"# Title\n\nintro\n\n| a | b |\n|---|---|\n{rows}\n```text\n{seen}```\n\nafter the fence\n"


# Every limit from "only the note fits" through the table header and into the rows, then a few inside the fence.
@pytest.mark.parametrize("limit", [*range(120, 260), 1_000, 5_000, 14_000, 17_500, 19_000])
def test_ci_summary_cuts_a_lone_oversized_section_at_a_safe_line(limit: int) -> None:
    md = one_big_section()
    assert len(md.encode()) > 19_000

    out = render_ci_summary(md, limit, artifact_hint="the artifact")

    assert len(out.encode()) <= limit
    assert out.rstrip().endswith("The full report is the artifact.")
    body = out.split("\n\n> ⚠️", 1)[0]
    assert md.startswith(body)
    lines = body.splitlines() or [""]  # the tightest limits leave room for the note alone
    assert not fence_open_after(lines)[-1], "cut inside a fence"
    assert lines[-1] != "| a | b |", "table header kept without its delimiter row"
    assert_tables_well_formed(out)


def test_ci_summary_never_cuts_mid_row_or_inside_a_fence() -> None:
    md = big_markdown()
    table_start = md.index("| Scenario |")
    for limit in range(table_start + 500, table_start + 3_000, 97):
        out = render_ci_summary(md, limit, artifact_hint="the artifact")
        assert len(out.encode()) <= limit
        body = out.split("\n\n> ⚠️", 1)[0]
        lines = body.splitlines()
        assert not fence_states(lines)[-1] or lines[-1].startswith("```"), "cut inside a fence"
        assert_tables_well_formed(out)


def test_ci_summary_refuses_a_limit_too_small_for_the_note() -> None:
    with pytest.raises(ValueError, match="cannot even hold the trimming note"):
        render_ci_summary(one_big_section(), 50, artifact_hint="the artifact")


def test_write_github_step_summary_appends_within_the_remaining_budget(tmp_path: Path) -> None:
    target = tmp_path / "step-summary.md"
    target.write_text("earlier step output\n" * 50)
    before = target.stat().st_size
    md = big_markdown()

    written = write_github_step_summary(md, {"GITHUB_STEP_SUMMARY": str(target)}, limit_bytes=15_000)

    assert written == target
    text = target.read_text()
    assert text.startswith("earlier step output\n")
    assert target.stat().st_size <= 15_000
    assert target.stat().st_size > before
    assert write_github_step_summary(md, {}) is None


# ---------------------------------------------------------------------------------------------------------
# Files on disk


EVENTS: list[dict[str, Any]] = [
    {
        "type": "m.room.message",
        "sender": "@bot:qa.localhost",
        "event_id": "$reply",
        "room_id": "!room:qa.localhost",
        "origin_server_ts": 1,
        "content": {
            "msgtype": "m.text",
            "body": "the secret marker tok-123",
            "format": "org.matrix.custom.html",
            "formatted_body": "<b>the secret marker tok-123</b>",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
        },
    },
    {
        "type": "m.room.message",
        "sender": "@driver:qa.localhost",
        "event_id": "$enc",
        "room_id": "!room:qa.localhost",
        "decrypted": True,
        "content": {"msgtype": "m.text", "body": "hi", "m.new_content": {"msgtype": "m.text", "body": "edited"}},
    },
    {"type": "m.room.encrypted", "sender": "@x:y", "event_id": "$raw", "content": {"algorithm": "m.megolm.v1"}},
]


def test_observed_events_drop_bodies_by_default() -> None:
    reply, decrypted, raw = sanitize_events(EVENTS, include_bodies=False)
    assert "tok-123" not in json.dumps([reply, decrypted, raw])
    assert reply["content"] == {
        "msgtype": "m.text",
        "format": "org.matrix.custom.html",
        "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
        "bodyLength": len("the secret marker tok-123"),
    }
    assert (reply["type"], reply["sender"], reply["event_id"], reply["room_id"]) == (
        "m.room.message",
        "@bot:qa.localhost",
        "$reply",
        "!room:qa.localhost",
    )
    assert "encrypted" not in reply
    assert decrypted["encrypted"] is True
    assert decrypted["content"]["m.new_content"] == {"msgtype": "m.text", "bodyLength": 6}
    assert raw["encrypted"] is True
    assert EVENTS[0]["content"]["body"] == "the secret marker tok-123", "the caller's events were modified"


def test_observed_events_keep_bodies_when_asked() -> None:
    reply, decrypted, _ = sanitize_events(EVENTS, include_bodies=True)
    assert reply["content"]["body"] == "the secret marker tok-123"
    assert reply["content"]["formatted_body"] == "<b>the secret marker tok-123</b>"
    assert reply["content"]["bodyLength"] == 25
    assert decrypted["encrypted"] is True


def test_write_reports_writes_every_file_and_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "run"
    written = write_reports(failing_run(), out, observed_events=EVENTS)

    assert written == {
        "summary": "matrix-qa-summary.json",
        "report": "matrix-qa-report.md",
        "html": "matrix-qa-report.html",
        "junit": "junit.xml",
        "observedEvents": "matrix-qa-observed-events.json",
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(written.values()), "temp files left behind"
    raw = json.loads((out / "matrix-qa-summary.json").read_text())
    assert raw["schema"] == SCHEMA
    loaded = load_summary(out / "matrix-qa-summary.json")
    assert loaded.scenarios == failing_run().scenarios
    # The record lists its sibling files, so a reader of the JSON or the markdown can find them.
    assert loaded.artifacts["junit"] == "junit.xml"
    assert "- junit: [junit.xml](junit.xml)" in (out / "matrix-qa-report.md").read_text()
    ET.parse(out / "junit.xml")
    events = json.loads((out / "matrix-qa-observed-events.json").read_text())
    assert "body" not in events[0]["content"]


def test_write_reports_without_events_writes_no_events_file(tmp_path: Path) -> None:
    written = write_reports(passing_run(), tmp_path)
    assert "observedEvents" not in written
    assert not (tmp_path / "matrix-qa-observed-events.json").exists()


def test_interrupted_write_keeps_the_previous_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_reports(passing_run(), tmp_path)
    before = (tmp_path / "matrix-qa-summary.json").read_text()

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(writer.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_reports(failing_run(), tmp_path)
    monkeypatch.undo()

    assert (tmp_path / "matrix-qa-summary.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["matrix-qa-summary.json", "matrix-qa-report.md", "matrix-qa-report.html", "junit.xml"]
    ), "a temp file was left behind"


def test_load_summary_rejects_wrong_schema_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "old-summary.json"
    data = passing_run().to_json_dict()
    data["schema"] = "matrix-qa.summary/v0"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"old-summary\.json.*matrix-qa\.summary/v0"):
        load_summary(path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", r"broken\.json:1:2: not valid JSON"),
        ("[]", r"broken\.json: .*not a JSON object"),
        (json.dumps({"schema": SCHEMA, "runId": "x"}), r"broken\.json: .*status"),
    ],
)
def test_load_summary_rejects_broken_files(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=pattern):
        load_summary(path)


def test_load_summary_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.json"):
        load_summary(tmp_path / "nowhere.json")


# ---------------------------------------------------------------------------------------------------------
# Redaction


def test_redact_replaces_long_secrets_and_ignores_short_ones() -> None:
    text = "key=sk-abcdef123 token=syt_tok_long and the word abc"
    assert redact(text, ["sk-abcdef123", "syt_tok_long", "abc", ""]) == (
        f"key={REDACTED} token={REDACTED} and the word abc"
    )


def test_redact_prefers_the_longest_overlapping_secret() -> None:
    assert redact("secretvalue-extended", ["secretvalue", "secretvalue-extended"]) == REDACTED


def test_scan_for_secrets_finds_plain_and_json_escaped_forms(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "log.txt").write_text("key sk-live-9999 here")
    (tmp_path / "data.json").write_text(json.dumps({"k": 'quote"secret'}))
    (tmp_path / "clean.txt").write_text("nothing")
    found = scan_for_secrets(tmp_path, ["sk-live-9999", 'quote"secret', "absent-secret"])
    assert found == [(tmp_path / "data.json", 1), (tmp_path / "sub" / "log.txt", 0)]


def test_write_reports_redacts_secrets_everywhere(tmp_path: Path) -> None:
    secret = "sk-<live>&|9999"
    run = failing_run()
    failure = run.scenarios[1].failure
    assert failure is not None
    failure.seen = [f"Authorization: Bearer {secret}"]
    failure.expected = f"no key {secret}"
    events = [{**EVENTS[0], "content": {**EVENTS[0]["content"], "body": f"leaked {secret}"}}]

    assert scan_for_secrets(tmp_path, [secret]) == []
    write_reports(run, tmp_path / "leaky", observed_events=events, include_bodies=True)
    assert scan_for_secrets(tmp_path / "leaky", [secret]), "the scan should see the unredacted secret"

    write_reports(run, tmp_path / "clean", observed_events=events, include_bodies=True, secrets=[secret])
    assert scan_for_secrets(tmp_path / "clean", [secret]) == []
    assert REDACTED in (tmp_path / "clean" / "matrix-qa-report.md").read_text()
    # Escaped forms (`&amp;`, `\|`) must not slip through either.
    for path in (tmp_path / "clean").iterdir():
        text = path.read_text()
        assert "9999" not in text, path.name
