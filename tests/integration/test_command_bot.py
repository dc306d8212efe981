"""A bot without a model, tested through its bot file's `say:` template: the mautrix command bot of tests/bots
(`!echo TEXT` answers TEXT) passes built-in scenarios of every kind it can run (mention gating, threads, a DM,
catch-up after a stop, reactions, redactions, homeserver faults) with the say command sent in place of the model
prompt, skips the ones that need a model naming the step, and its buggy variants fail with the unwanted reply or
the wrong shape listed. Three runs on the session's shared Synapse.

That it passes more than these (27 of the 87 built-in scenarios, the rest skipped) is the run
`matrix-qa run --bot tests/bots/mautrix-command-bot.yaml --profile all --jobs 2`; that every built-in scenario
either is runnable for it or names what it lacks is tests/unit/test_say.py, without servers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.shared.redact import scan_for_secrets
from tests.integration.proc_watch import bot_processes, still_running, watched

pytestmark = pytest.mark.integration

BOTS = Path(__file__).resolve().parents[1] / "bots"
# One of each kind the say template opens: a top-level answer, silence proved by the trace and a control, a
# thread, a DM, a stop and a catch-up, a reaction and a redaction never answered, a refused send.
PASSING = ["canary", "matrix-mention-gating", "matrix-thread-nested-reply-shape", "matrix-dm-reply-shape",
           "matrix-restart-catchup-dedupe", "matrix-reaction-not-a-reply", "matrix-redaction-not-a-trigger",
           "matrix-send-forbidden"]
NEEDS_A_MODEL = "matrix-restart-resume"  # the same story, but it looks at the model's request


async def test_the_command_bot_passes_with_its_say_command_and_skips_what_needs_a_model(run_qa) -> None:
    result = await run_qa(*PASSING, NEEDS_A_MODEL, bot_file=BOTS / "mautrix-command-bot.yaml", jobs=2)
    assert result.code == 0, result.report
    for scenario_id in PASSING:
        scenario = result.scenario(scenario_id)
        assert scenario["status"] == "pass", scenario
        assert "NOT CHECKED" not in scenario["details"], scenario  # its trace proves each silence
    skipped = result.scenario(NEEDS_A_MODEL)
    assert skipped["status"] == "skip"
    assert skipped["details"] == ("skipped: bot 'mautrix-command-bot' lacks 'model' "
                                  "(step 6 (expect_model_request))")
    # Nothing asked a model: the bot answers only `!echo TEXT`, so each exact marker it gave back came from the
    # say command the harness sent in place of the prompt.
    journal = json.loads((result.dir / "provider-journal.json").read_text())
    assert [e for e in journal if e.get("api") is not None] == []
    assert result.summary["environment"]["bot"]["name"] == "mautrix-command-bot"


async def test_the_buggy_command_bots_fail_with_what_was_wrong(run_qa) -> None:
    loud = await run_qa("matrix-mention-gating", bot_file=BOTS / "mautrix-command-bot-answer-unmentioned.yaml")
    assert loud.code == 1
    scenario = loud.scenario("matrix-mention-gating")
    check = scenario["negativeChecks"][0]
    assert check["botReason"] == "accepted" and check["unwantedReplies"], check
    assert any(line.startswith("unwanted reply: ") and check["unwantedReplies"][0] in line
               for line in scenario["failure"]["seen"]), scenario["failure"]
    assert check["unwantedReplies"][0] in loud.report

    flat = await run_qa("matrix-thread-nested-reply-shape", bot_file=BOTS / "mautrix-command-bot-thread-top-level.yaml")
    assert flat.code == 1
    failure = flat.scenario("matrix-thread-nested-reply-shape")["failure"]
    assert failure["stepKind"] == "expect_reply"
    assert any("expected rel_type m.thread" in line for line in failure["seen"]), failure
    assert "expected rel_type m.thread" in flat.report


async def test_a_command_bot_killed_on_its_say_command_fails_naming_its_death(run_qa) -> None:
    """SIGKILLed when the say command arrives: the scenario fails at once naming the death and the bot's log,
    nothing the bot ran is left, and its session is in no artifact."""
    result, snapshots = await watched(run_qa("canary", bot_file=BOTS / "mautrix-command-bot-die-on-command.yaml"))
    assert result.code == 1, result.report
    assert result.summary["status"] == "fail"
    canary = result.scenario("canary")
    assert canary["status"] == "fail" and canary["failure"]["stepKind"] == "expect_reply", canary
    seen = "\n".join(canary["failure"]["seen"])
    assert "killed by SIGKILL unexpectedly" in seen and "bot.log" in seen, seen
    assert "deliberate bug enabled: die-on-command" in seen, "the log tail is shown"
    assert "model" not in seen, "a bot without a model is not said to have never asked one"
    assert canary["durationMs"] < 30_000, "not the scenario's 60 s timeout"
    # It died of the say command the harness sent in the prompt's place (its trace's last turn began on it).
    assert '"turn.start"' in (result.dir / "scenarios" / "canary" / "bot-trace.jsonl").read_text()
    ran = bot_processes(snapshots, result.summary["runId"])
    assert any("mautrix_command_bot.py" in cmd for cmd in ran.values()), ran
    assert still_running(ran) == []
    secrets = [s for s in result.secrets if len(s) >= 16]
    assert secrets
    assert scan_for_secrets(result.dir, secrets) == []
