"""Faults the other fault scenarios do not cover: a /sync held open with no answer and no error, first syncs
that fail before the bot ever got ready, and (its passing run is in test_media.py) a media download that fails.
One run passes the sync ones with the embedded agent; one run shows each failing on the agent's test-only
mutation of the behaviour it guards (they leave each other's scenarios alone)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

SYNC = ("matrix-sync-silent-stall", "matrix-first-sync-fails-repeatedly")


async def test_sync_stall_and_failing_first_syncs_pass(run_qa) -> None:
    result = await run_qa(*SYNC)
    assert result.code == 0, result.report
    stall = result.scenario("matrix-sync-silent-stall")
    artifact = json.loads((result.dir / stall["artifacts"]["faults"]).read_text())
    held = [h for h in artifact["hits"] if h["rule"] == "sync-silent"]
    assert [h["ending"] for h in held] == ["client-gave-up"]
    trace = [json.loads(line) for line in
             (result.dir / "scenarios/matrix-sync-silent-stall/bot-trace.jsonl").read_text().splitlines()]
    stalls = [r for r in trace if r["type"] == "sync.stall"]
    assert len(stalls) == 1 and stalls[0]["timeoutMs"] == 2000, stalls
    first = [json.loads(line) for line in
             (result.dir / "scenarios/matrix-first-sync-fails-repeatedly/bot-trace.jsonl").read_text().splitlines()]
    waits = [r["retryInS"] for r in first if r["type"] == "error" and r.get("where") == "sync"]
    assert waits == sorted(waits) and len(waits) >= 3 and max(waits) <= 1.0, waits  # growing, capped


async def test_each_sync_scenario_fails_on_its_mutation(run_qa) -> None:
    result = await run_qa(*SYNC, "matrix-media-download-fails", bot_overrides={"testMutations": [
        "ignore-sync-stall", "sync-retry-at-once", "media-failure-to-model"]})
    assert result.code == 1, result.report
    failures = {s["id"]: s["failure"] for s in result.summary["scenarios"]}
    # Waiting forever on the silent /sync: the stall is never noticed.
    stall = failures["matrix-sync-silent-stall"]
    assert (stall["stepKind"], stall["step"]) == ("expect_trace", 6), stall
    # No backoff: the proxy saw the retries come at once.
    at_once = failures["matrix-first-sync-fails-repeatedly"]
    assert (at_once["stepKind"], at_once["step"]) == ("expect_faults", 3), at_once
    assert "retried sooner than 40 ms" in "\n".join(at_once["seen"]), at_once
    # A failed download told to the model only: the person gets an answer as if the image had been seen.
    told_model = failures["matrix-media-download-fails"]
    assert (told_model["stepKind"], told_model["step"]) == ("expect_reply", 9), told_model
    assert "does not contain 'could not download the attachment pixel.png'" in "\n".join(told_model["seen"])
