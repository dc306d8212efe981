"""Record a live run, replay it: against the independent stand-in model of tests/openai_standin.py (not our mock
provider), then with that server stopped. The same scenarios pass with the same statuses; a changed prompt fails
with the diff; the cassettes hold neither the key nor any token of the run; the committed cassettes replay."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from qa.shared.markers import TOKEN_RE, MarkerFactory
from qa.shared.redact import scan_for_secrets
from tests.integration.conftest import MUTANT_STEP_CAP_S, REPO, run_in_process
from tests.openai_standin import OpenAIStandIn

pytestmark = pytest.mark.integration

# Sessions (a thread beside the top level), a reaction notice naming an event id, the model's pace (the lock
# probe lands mid call), and an exec tool call with its approval flow.
RECORDED = ["canary", "matrix-thread-isolation", "matrix-reaction-notification", "matrix-session-lock-contention",
            "matrix-approval-exec-metadata-single-event"]
NOT_RECORDED = "matrix-allowlist-block"


def _statuses(summary: dict) -> dict[str, str]:
    return {s["id"]: s["status"] for s in summary["scenarios"]}


async def test_record_then_replay_without_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-standin-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    cassettes = tmp_path / "cassettes"
    standin = OpenAIStandIn(key)
    await standin.start()
    try:
        recorded = await run_in_process(tmp_path / "record", tmp_path / "console.log", scenario_ids=RECORDED,
                                        provider="live", model="standin-1", base_url=standin.base_url,
                                        record_dir=cassettes)
    finally:
        await standin.stop()
    asked = len(standin.prompts)
    assert recorded.code == 0, recorded.report
    assert sorted(p.name for p in cassettes.iterdir()) == sorted(f"{s}.yaml" for s in RECORDED)

    # No key, no access token or password of the run, no marker of the run (stored as placeholders).
    assert scan_for_secrets(cassettes, [key, *recorded.secrets]) == []
    run_markers = MarkerFactory(recorded.summary["runId"])
    for path in cassettes.iterdir():
        text = path.read_text()
        assert not TOKEN_RE.search(text), path.name
        assert not any(run_markers.child(path.stem)[n] in text for n in run_markers), path.name
        assert recorded.summary["runId"][-6:].lower() not in text, path.name
    exec_cassette = (cassettes / "matrix-approval-exec-metadata-single-event.yaml").read_text()
    assert "name: exec" in exec_cassette and "finish_reason: tool_calls" in exec_cassette
    assert "{event1}" in (cassettes / "matrix-reaction-notification.yaml").read_text()

    # The model is gone; the replay answers. A scenario without a cassette is skipped, saying why.
    replayed = await run_in_process(tmp_path / "replay", tmp_path / "console.log",
                                    scenario_ids=[*RECORDED, NOT_RECORDED], provider="replay",
                                    cassettes_dir=cassettes)
    assert len(standin.prompts) == asked
    assert replayed.code == 0, replayed.report
    statuses = _statuses(replayed.summary)
    assert {s: statuses[s] for s in RECORDED} == _statuses(recorded.summary)
    skipped = replayed.scenario(NOT_RECORDED)
    assert skipped["status"] == "skip" and "no cassette" in skipped["details"] and "--record" in skipped["details"]
    assert replayed.summary["environment"]["provider"]["mode"] == "replay"
    # The exec tool call came from the cassette, and the approval flow ran on it.
    exec_result = replayed.scenario("matrix-approval-exec-metadata-single-event")
    assert [s["kind"] for s in exec_result["steps"] if s["status"] == "pass"].count("expect_approval") == 2
    journal = json.loads((replayed.dir / "provider-journal.json").read_text())
    rules = [e["rule"] for e in journal if e["path"].endswith("/chat/completions")]
    assert "matrix-approval-exec-metadata-single-event.yaml #1" in rules and None not in rules
    # Journal checks a live run could not make are made on the replay.
    isolation = replayed.scenario("matrix-thread-isolation")
    assert "NOT CHECKED" not in isolation["details"]

    # A prompt changed since the recording: that scenario fails, with the diff and the way to re-record.
    changed_dir = tmp_path / "changed"
    changed_dir.mkdir()
    original = (REPO / "scenarios" / "canary.yaml").read_text()
    changed = original.replace("reply with only this exact marker", "answer with nothing but this marker")
    assert changed != original
    (changed_dir / "canary.yaml").write_text(changed)
    mismatch = await run_in_process(tmp_path / "changed-run", tmp_path / "console.log", scenario_ids=["canary"],
                                    scenario_paths=[changed_dir], provider="replay", cassettes_dir=cassettes,
                                    replay_speed="fast", step_timeout_cap_s=MUTANT_STEP_CAP_S)  # no answer comes
    assert mismatch.code == 1
    canary = mismatch.scenario("canary")
    assert canary["status"] == "fail"
    assert (canary["failure"]["stepKind"], canary["failure"]["step"]) == ("expect_reply", 2), canary["failure"]
    assert canary["details"] == "replay: 1 model request(s) match no recorded exchange"
    report = mismatch.report
    assert "-  content: 'mqa-bot-canary-{run}: reply with only this exact marker: {token}'" in report
    assert "+  content: 'mqa-bot-canary-{run}: answer with nothing but this marker: {token}'" in report
    assert f"--record {cassettes} --scenario canary" in report


async def test_the_committed_cassettes_replay(tmp_path: Path) -> None:
    """What the CI replay job runs: the fast profile from fixtures/cassettes (recorded from the stand-in)."""
    result = await run_in_process(tmp_path / "out", tmp_path / "console.log", provider="replay",
                                  cassettes_dir=REPO / "fixtures" / "cassettes")
    assert result.code == 0, result.report
    assert {s["status"] for s in result.summary["scenarios"]} == {"pass"}
