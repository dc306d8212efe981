"""Streaming-preview scenarios on a real Synapse: drafts edited as the model speaks, quiet placeholders, tool
progress, mention safety, and the lock rule while a draft is edited. Each scenario is shown failing on its bug
(a test-only agent setting, or the legacy lock scope). Scenarios are grouped per run: each run boots Synapse."""

from __future__ import annotations

import pytest

from tests.integration.test_media import _failure

pytestmark = pytest.mark.integration

STREAMING = [
    "matrix-room-partial-streaming-preview",
    "matrix-room-quiet-streaming-preview",
    "matrix-room-tool-progress-preview",
    "matrix-room-tool-progress-preview-opt-out",
    "matrix-room-tool-progress-error",
    "matrix-room-tool-progress-mention-safety",
    "matrix-streaming-lock-evidence",
]
LOCK = "matrix-streaming-lock-evidence"


async def test_streaming_scenarios_pass_and_the_lock_evidence_sees_preview_io(run_qa) -> None:
    result = await run_qa(*STREAMING)
    assert result.code == 0, result.report
    assert all(result.scenario(s)["status"] == "pass" for s in STREAMING)
    lock = result.summary["lock"]
    assert lock["verdict"] == "pass" and lock["totalOverlapMs"] == 0, lock["reasons"]
    trace = (result.dir / "scenarios" / LOCK / "bot-trace.jsonl").read_text()
    assert '"type":"preview.edit.start"' in trace and '"kind":"final"' in trace


async def test_a_final_edit_missing_the_tail_fails_partial_and_quiet(run_qa) -> None:
    ids = ["matrix-room-partial-streaming-preview", "matrix-room-quiet-streaming-preview"]
    result = await run_qa(*ids, bot_overrides={"testMutations": ["final-edit-truncated"]})
    assert result.code == 1
    for scenario_id in ids:
        failure, text = _failure(result, scenario_id)
        assert failure["stepKind"] == "expect_reply" and "expected the complete answer" in text, text


async def test_pinging_previews_abandoned_drafts_and_ignored_opt_out_are_caught(run_qa) -> None:
    ids = ["matrix-room-tool-progress-mention-safety", "matrix-room-tool-progress-error",
           "matrix-room-tool-progress-preview-opt-out"]
    result = await run_qa(*ids, bot_overrides={
        "testMutations": ["preview-pings", "preview-abandoned-on-tool-error"], "toolProgress": "on"})
    assert result.code == 1
    failure, text = _failure(result, "matrix-room-tool-progress-mention-safety")
    assert "pings: m.mentions {'room': True" in text and "@someone:example.org" in text
    failure, text = _failure(result, "matrix-room-tool-progress-error")
    # The answer came as a fresh message: the reply has no edits, the draft still says the tool failed.
    assert failure["stepKind"] == "expect_reply" and "0 edit(s), expected at least 1" in text, text
    failure, text = _failure(result, "matrix-room-tool-progress-preview-opt-out")
    assert failure["stepKind"] == "expect_edits" and "showed '🔧', which it must not" in text, text


async def test_holding_the_lock_while_a_draft_is_edited_is_caught(run_qa) -> None:
    result = await run_qa(LOCK, bot_overrides={"testMutations": ["lock-while-streaming"]})
    assert result.code == 1
    failure, _ = _failure(result, LOCK)
    assert failure["stepKind"] == "expect_trace" and "waitMs" in failure["expected"]
    lock = result.summary["lock"]
    assert lock["verdict"] == "fail" and lock["totalOverlapMs"] > 0
    assert any("lock held during model I/O" in r for r in lock["reasons"])


async def test_the_legacy_whole_turn_lock_is_caught_while_streaming(run_qa) -> None:
    result = await run_qa(LOCK, bot_env={"MATRIX_QA_SESSION_WRITE_LOCK_SCOPE": "attempt"})
    assert result.code == 1
    failure, _ = _failure(result, LOCK)
    assert failure["stepKind"] == "expect_trace" and "waitMs" in failure["expected"]
    assert result.summary["lock"]["verdict"] == "fail" and result.summary["lock"]["scope"] == "attempt"


@pytest.mark.parametrize("scenario", ["matrix-room-partial-streaming-preview", "matrix-room-quiet-streaming-preview"])
async def test_a_buffered_answer_burst_out_as_a_preview_is_caught(run_qa, scenario: str) -> None:
    """The cheat that passed when only edits were counted (issue 27): the whole answer awaited, then a draft and
    an edit in one burst, then the final edit. Its count (2) is within bounds; its timing is not. Quiet: the
    placeholder and its one edit sent after the answer is whole (passed before the quiet scenario's
    draft_before_stream_end)."""
    result = await run_qa(scenario, bot_overrides={"testMutations": ["buffered-preview"]})
    assert result.code == 1
    failure, text = _failure(result, scenario)
    assert failure["stepKind"] == "expect_edits", text
    assert "after the model's stream ended: the answer was buffered" in text, text
    # The burst's edits are one send apart, usually under the interval too ("under the edit interval of 250 ms"),
    # but how long a send takes depends on the machine's load, so only the robust evidence is asserted here; the
    # pacing rule is shown catching bursts in tests/unit/test_edit_chain.py.


async def test_a_control_message_is_judged_by_its_final_edit_when_the_bot_streams(run_qa) -> None:
    # Streaming quiet, the agent answers expect_no_reply's control message, as every message, with a placeholder
    # draft it then edits into the answer: the control's expected body is the edited text (it was the draft's).
    result = await run_qa("matrix-mention-gating", bot_overrides={"streaming": "quiet"})
    assert result.code == 0, result.report
    [check] = [c for s in result.summary["scenarios"] for c in s.get("negativeChecks", [])][:1]
    assert check.get("controlReplyEventId"), check
