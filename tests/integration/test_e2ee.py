"""End-to-end encryption on a real Synapse with real Olm/Megolm (vodozemac) on both sides."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

E2EE = ("matrix-e2ee-basic-reply", "matrix-e2ee-thread-reply", "matrix-e2ee-restart-resume",
        "matrix-e2ee-undecryptable")


async def test_encrypted_scenarios_pass(run_qa) -> None:
    result = await run_qa(*E2EE)
    assert result.code == 0, result.report
    observed = json.loads((result.dir / "matrix-qa-observed-events.json").read_text())
    messages = [e for e in observed if e["scenario"] == "matrix-e2ee-basic-reply" and e["type"] == "m.room.message"]
    assert len(messages) == 2 and all(e.get("encrypted") for e in messages), "both sides talked encrypted"
    trace = [json.loads(line) for line in
             (result.dir / "scenarios/matrix-e2ee-undecryptable/bot-trace.jsonl").read_text().splitlines()]
    [dropped] = [r for r in trace if r["type"] == "inbound" and r.get("reason") == "undecryptable"]
    assert dropped["sessionId"], "the trace names the Megolm session whose key never came"
    [pending] = [r for r in trace if r["type"] == "decrypt.pending"]
    assert pending["retryS"] == 3, "the scenario's bot.decryptRetry reached the bot (its own default is longer)"
    check = result.scenario("matrix-e2ee-undecryptable")["negativeChecks"][0]
    assert check["botReason"] == "undecryptable" and check["controlReplyEventId"]


async def test_a_bot_that_loses_its_crypto_store_cannot_decrypt_after_restart(run_qa) -> None:
    result = await run_qa("matrix-e2ee-restart-resume", bot_overrides={"forgetStateOnStart": True})
    assert result.code == 1
    failure = result.scenario("matrix-e2ee-restart-resume")["failure"]
    assert "dropped it (undecryptable)" in failure["expected"]
    assert any("reason=undecryptable" in line and "sessionId=" in line for line in failure["seen"])
