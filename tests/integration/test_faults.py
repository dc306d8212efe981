"""Faults on purpose, on a real Synapse: the seven fault scenarios pass with the embedded agent, and each fails
on the mutation that breaks the behaviour it guards, with the evidence in its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import MUTANT_STEP_CAP_S, REPO, run_in_process

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
    # `during` reached the homeserver while the bot's syncs were failing: its answer is about the faults.
    steps = result.scenario("matrix-sync-errors-reconnect")["steps"]
    assert any("'during' reached the homeserver while they were under way" in s["detail"] for s in steps), steps
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
    # the exit is the driver's next send, the wait for a failed sync or for the reply, whichever is running then.
    for gone, code, steps in (("matrix-sync-errors-reconnect", 2, {4, 5, 6}), ("matrix-send-forbidden", 3, {3, 4, 5})):
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


RECONNECT = "matrix-sync-errors-reconnect"


def _during_sent_late(directory: Path) -> str:
    """matrix-sync-errors-reconnect with `during` sent only once the 502s are lifted and the bot has synced again
    (as a scenario that lifted them on a time, on a machine slow enough that the driver's send came after): the
    faults are over by then."""
    data = yaml.safe_load((REPO / "scenarios" / f"{RECONNECT}.yaml").read_text())
    data["id"] = f"{RECONNECT}-late"
    steps = data["steps"]
    at = next(i for i, step in enumerate(steps) if step.get("send", {}).get("id") == "during")
    during, gate = steps.pop(at), steps.pop(at)
    assert gate["expect_faults"]["landed_during"] == "during", gate
    lift = next(i for i, step in enumerate(steps) if "set_faults" in step and i >= at)
    # The 502s were hit (the step before `during`), then lifted; the bot's first sync that worked again has come
    # back (its own record of it): `during` can only reach it as new.
    steps[lift:lift + 1] = [steps[lift], {"expect_trace": {"type": "sync.resumed"}}, during, gate]
    (directory / f"{data['id']}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return str(data["id"])


async def test_a_bot_that_starts_over_after_a_failed_sync_fails_only_where_the_message_came_meanwhile(
        tmp_path: Path) -> None:
    """sync-restart-on-error: after a failed /sync the agent starts over with no position and takes the new batch
    for history. `during`, sent while its syncs fail, is lost: the scenario fails at its reply. Sent after the
    faults were over it is answered, and every other check passes that bot too: only `landed_during` tells, NOT
    CHECKED (before it the scenario passed such a run)."""
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / f"{RECONNECT}.yaml").write_text((REPO / "scenarios" / f"{RECONNECT}.yaml").read_text())
    late = _during_sent_late(scenarios)
    result = await run_in_process(tmp_path / "run", tmp_path / "console.log", scenario_ids=[RECONNECT, late],
                                  scenario_paths=[scenarios], jobs=2, step_timeout_cap_s=MUTANT_STEP_CAP_S,
                                  bot_overrides={"testMutations": ["sync-restart-on-error"]})
    assert result.code == 1
    lost = result.scenario(RECONNECT)
    assert lost["status"] == "fail", lost
    assert (lost["failure"]["stepKind"], lost["failure"]["step"]) == ("expect_reply", 8), lost["failure"]
    told = result.scenario(late)
    assert told["status"] == "pass", told
    assert "1 check(s) NOT CHECKED" in told["details"], told["details"]
    assert "after the rule's last hit had ended" in told["details"] or any(
        "after the rule's last hit had ended" in str(step) for step in told["steps"]), told
