"""Faults on purpose, on a real Synapse: the seven fault scenarios pass with the embedded agent, and each fails
on the mutation that breaks the behaviour it guards, with the evidence in its report."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import MUTANT_STEP_CAP_S

pytestmark = pytest.mark.integration

HOMESERVER = ("matrix-send-rate-limited", "matrix-sync-errors-reconnect", "matrix-send-forbidden")
PROVIDER = ("matrix-provider-5xx-retry", "matrix-provider-429-retry-after", "matrix-provider-hang-timeout",
            "matrix-provider-stream-cut")


async def test_fault_scenarios_pass_and_record_every_hit(run_qa) -> None:
    result = await run_qa(*HOMESERVER, *PROVIDER)
    assert result.code == 0, result.report
    # Retries and waits never happened under the session lock.
    assert result.summary["lock"]["verdict"] == "pass", result.report
    limited = result.scenario("matrix-send-rate-limited")
    assert [h["rule"] for h in limited["faultHits"]].count("reply-rate-limited") == 2
    artifact = json.loads((result.dir / limited["artifacts"]["faults"]).read_text())
    assert [h["status"] for h in artifact["hits"] if h["rule"] == "reply-rate-limited"] == [429, 429]
    # The retried PUTs reuse one transaction id: every send try of the thread reply has the same path.
    tries = {h["path"] for h in artifact["hits"]}
    assert len(tries) == 1, tries
    hung = result.scenario("matrix-provider-hang-timeout")
    assert {h["source"] for h in hung["faultHits"]} == {"provider"}
    # Issue 28: the agent gave up on each held request itself (its 1 s timeout), and Faults served says so.
    assert all(h["what"].startswith("hang: the bot gave up waiting after") for h in hung["faultHits"]), \
        [h["what"] for h in hung["faultHits"]]
    report = result.report
    assert "## Faults served" in report and "`reply-answer-lost`" in report and "`fault-stream-cut`" in report
    # Every transcript line is valid (the runner fails the scenario otherwise); the failed turn is recorded.
    records = [json.loads(line) for path in (result.dir / "scenarios/matrix-provider-5xx-retry/transcripts")
               .glob("*.jsonl") for line in path.read_text().splitlines()]
    assert [r["kind"] for r in records].count("failed") == 1


async def test_each_fault_scenario_fails_on_its_mutation(run_qa) -> None:
    broken = {f"mutations.{name}": True for name in ("newTxnIdOnRetry", "giveUpOnSyncError", "crashOnSendError",
                                                       "noModelRetry", "noModelTimeout", "keepPartialReply")}
    # The agent does not stream here, so a wrong answer (the 5xx notice, the cut stream's partial text) fails at
    # once instead of waiting 10 s for an edit; the hang's wait for a notice that never comes is cut to the cap.
    result = await run_qa(*HOMESERVER, "matrix-provider-5xx-retry", "matrix-provider-hang-timeout",
                          "matrix-provider-stream-cut", bot_overrides=broken, reply_edit_wait_s=0,
                          step_timeout_cap_s=MUTANT_STEP_CAP_S)
    assert result.code == 1
    failures = {s["id"]: s["failure"] for s in result.summary["scenarios"]}
    assert all(s["status"] == "fail" for s in result.summary["scenarios"]), result.report

    twice = failures["matrix-send-rate-limited"]
    assert twice["expected"] == "exactly 1 bot reply to 'ask'" and twice["seen"][0].startswith("2 replies"), twice
    # The bot is gone: the reply to the next message never comes, and the evidence says why. It exits as soon as
    # its sync fails (the faults are set) or its send is refused (the trace record is there): the step that sees
    # the exit is the driver's next send or the wait for the reply, whichever is running then.
    for gone, code, steps in (("matrix-sync-errors-reconnect", 2, {4, 5}), ("matrix-send-forbidden", 3, {3, 4, 5})):
        seen = "\n".join(failures[gone]["seen"])
        assert failures[gone]["step"] in steps and f"exited with code {code}" in seen, failures[gone]
    assert "error where=sync error=matrix-qa fault 'sync-bad-gateway'" in \
        "\n".join(failures["matrix-sync-errors-reconnect"]["seen"])
    assert "status=403" in "\n".join(failures["matrix-send-forbidden"]["seen"])
    no_retry = failures["matrix-provider-5xx-retry"]
    assert no_retry["seen"][0].startswith("body 'Sorry, I could not answer this: the model failed (HTTP 500 after 1"
                                          " attempt)"), no_retry
    hang = failures["matrix-provider-hang-timeout"]
    assert hang["expected"] == f"a bot reply to step 'ask' within {MUTANT_STEP_CAP_S:g}s", hang  # its 15 s, capped
    # Issue 28: what the journal knows, and where the marker came from; the held request was ended by us.
    assert any("model request(s) carried the trigger's text; the last" in line and "still in flight" in line
               for line in hang["seen"]), hang
    assert any(line.startswith("MQA-") and line.endswith("= step 'ask'") for line in hang["seen"]), hang
    hung = result.scenario("matrix-provider-hang-timeout")["faultHits"]
    assert any(h["what"].startswith("hang: ended by the harness") for h in hung), hung
    partial = failures["matrix-provider-stream-cut"]
    assert partial["stepKind"] == "expect_reply" and partial["seen"][0].startswith("body 'MQA-' != expected"), partial
    report = result.report
    for scenario_id in failures:
        assert f"### ❌ {scenario_id}" in report
    assert "**Faults served:** reply-rate-limited ×2" in report


async def test_ignoring_retry_after_fails_both_rate_limit_scenarios(run_qa) -> None:
    result = await run_qa("matrix-send-rate-limited", "matrix-provider-429-retry-after",
                          bot_overrides={"mutations.ignoreRetryAfter": True})
    assert result.code == 1
    for scenario_id, wait in (("matrix-send-rate-limited", 700), ("matrix-provider-429-retry-after", 1000)):
        failure = result.scenario(scenario_id)["failure"]
        assert failure["stepKind"] == "expect_faults", failure
        assert f"each retried no sooner than {wait} ms later" in failure["expected"]
        assert any(line.startswith(f"retried sooner than {wait} ms") for line in failure["seen"]), failure


async def test_a_foreign_bot_meets_the_same_homeserver_faults(run_qa) -> None:
    """The proxy is bot-agnostic: any bot that honours MATRIX_QA_HOMESERVER_URL goes through it (here the nio
    test bot, whose client retries 429s and dropped sends on the same transaction id by itself)."""
    from tests.integration.test_foreign_bot import BOTS

    result = await run_qa("matrix-send-rate-limited", "matrix-sync-errors-reconnect",
                          bot_file=BOTS / "nio-reply-bot.yaml")
    assert result.code == 0, result.report
    for scenario_id in ("matrix-send-rate-limited", "matrix-sync-errors-reconnect"):
        assert result.scenario(scenario_id)["faultHits"], scenario_id
