"""Application-service bots (issue 33), with an independent one (tests/bots/mautrix_appservice_bot.py, mautrix-python's
appservice module): the shared Synapse loads the harness's registration at boot and the harness forwards each
scenario's share of the pushed transactions to that scenario's bot. It passes the canary, mention gating and a thread
follow-up side by side; its tokens are in its own processes' environments only and in no artifact; the variant that
answers unmentioned messages fails mention gating, and keeps answering across a homeserver restart; the variant that
answers as a user outside its namespace fails the canary, the failure naming who answered. Push faults: in the same
run a transaction pushed again under its id is answered once and a held-back one still answered; the variant that
forgets the ids it has handled answers the redelivered mention three times, and fails saying so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.shared.redact import scan_for_secrets
from tests.integration.conftest import MUTANT_STEP_CAP_S
from tests.integration.proc_watch import started_by, watched_with_parents

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOTS = REPO / "tests" / "bots"
GENERIC = ["canary", "matrix-mention-gating", "matrix-thread-follow-up"]
PUSHED = "matrix-appservice-push-redelivered"
TOKENS = (b"MATRIX_QA_AS_TOKEN=", b"MATRIX_QA_HS_TOKEN=")


async def test_an_appservice_bot_passes_and_its_tokens_stay_its_own(run_qa, session_synapse) -> None:
    # Four at once, so the push scenario adds no turn of its own to the run.
    result, snapshots = await watched_with_parents(
        run_qa(*GENERIC, PUSHED, bot_file=BOTS / "mautrix-appservice-bot.yaml", jobs=4))
    assert result.code == 0, result.report
    for scenario_id in [*GENERIC, PUSHED]:
        scenario = result.scenario(scenario_id)
        assert scenario["status"] == "pass", scenario
        spoke = {s["account"] for s in scenario["steps"] if s["kind"] == "expect_reply"}
        assert spoke <= {"bot"}, scenario
    _push_faults_were_served(result)
    host = session_synapse.hs.appservice
    assert host is not None and host.leases == {}, "every scenario's lease ends with it"
    # Only this worker's homeserver's bots: another xdist worker's run has a Synapse and tokens of its own.
    ours = b"MATRIX_QA_AS_TOKEN=" + host.as_token.encode()
    handed = {line.split(b"=", 1)[1] for snap, _parent in snapshots for _cmd, environ in snap.values()
              if ours in environ.split(b"\0") for line in environ.split(b"\0") if line.startswith(TOKENS)}
    # One as_token (the registration's) and one hs_token per scenario, never the registration's own hs_token.
    assert host.as_token.encode() in handed and host.hs_token.encode() not in handed
    assert len(handed) == 1 + len(GENERIC) + 1, handed
    # A holder is the bot, or a process the bot started (its libraries may run `uname -p`, which inherits its
    # environment): nothing the harness runs holds them.
    holders = {(pid, cmd): started_by(pid, parent, snap, "mautrix_appservice_bot.py")
               for snap, parent in snapshots for pid, (cmd, environ) in snap.items()
               if any(t in environ for t in [*handed, host.hs_token.encode()])}
    assert holders and all(holders.values()), holders
    assert {t.decode() for t in handed} | {host.hs_token} <= set(result.secrets)
    assert scan_for_secrets(result.dir, [*(t.decode() for t in handed), host.hs_token]) == []


async def test_an_appservice_bot_answering_unmentioned_messages_fails_mention_gating(run_qa) -> None:
    """In the same run (one at a time: the restart would cut the other scenario short), the homeserver restarts
    under the bot, which keeps answering: Synapse numbers its transactions afresh after a restart, and a bot that
    drops ids it has seen would miss every later one were the harness to pass the homeserver's ids on."""
    result = await run_qa("matrix-mention-gating", "matrix-homeserver-restart-resume", jobs=1,
                          bot_file=BOTS / "mautrix-appservice-bot-answer-unmentioned.yaml")
    assert result.code == 1, result.report
    assert result.scenario("matrix-homeserver-restart-resume")["status"] == "pass", result.report
    failure = result.scenario("matrix-mention-gating")["failure"]
    # The bot answers each message in its own task, so the unmentioned one's answer may come after the control's:
    # step 2 (judged by order) watches on after the control's answer for as long as the bot's turnaround says
    # an answer could still come, so the failure is step 2's own, not a later step's or the scenario's end.
    assert failure["stepKind"] == "expect_no_reply" and failure["step"] == 2, failure
    assert failure["seen"][0].startswith("the bot answered '"), failure
    assert any("from=@mqa_as-" in line for line in failure["seen"]), failure


async def test_an_appservice_bot_answering_outside_its_namespace_fails_the_canary(run_qa) -> None:
    """The variant answers as `@mqa_as-stray-…`, a user the registration's as_token may act for but outside the
    sub-namespace its scenario was given: the homeserver takes the answer, and the canary fails showing who sent it."""
    result = await run_qa("canary", bot_file=BOTS / "mautrix-appservice-bot-answer-outside-namespace.yaml",
                          step_timeout_cap_s=MUTANT_STEP_CAP_S)  # no answer from its accounts ever comes
    assert result.code == 1, result.report
    failure = result.scenario("canary")["failure"]
    assert (failure["stepKind"], failure["step"]) == ("expect_reply", 2), failure
    strays = [line for line in failure["seen"] if "from=@mqa_as-stray-" in line]
    assert strays and all(line.endswith("(from none of the bot's accounts)") for line in strays), failure
    # The stray's answer is the model's answer to the canary: only the sender is wrong.
    assert any("m.room.message" in line for line in strays), failure


def _push_faults_were_served(result) -> None:
    """Filed as the fault proxy's hits are: the summary, the artifact; each redelivery taken by the bot (200)."""
    scenario = result.scenario(PUSHED)
    hits = [(h["source"], h["rule"], h["action"], h["status"]) for h in scenario["faultHits"]]
    assert hits == [("push", "push-again", "redeliver", 200), ("push", "push-again", "redeliver", 200),
                    ("push", "push-late", "delay", None)], scenario["faultHits"]
    artifact = json.loads((result.dir / scenario["artifacts"]["faults"]).read_text())
    assert [h["rule"] for h in artifact["push"]["hits"]] == ["push-again", "push-again", "push-late"], artifact
    # The same transaction each time: the id the bot was first given.
    assert len({h["path"] for h in artifact["push"]["hits"][:2]}) == 1, artifact
    assert "Faults served" in result.report and "push-again" in result.report


async def test_an_appservice_bot_handling_a_redelivered_transaction_again_answers_twice(run_qa) -> None:
    """mautrix answers a transaction id it has handled with 200 and nothing more; the variant forgets them, so each
    redelivery of the mention is handled as new and answered: the reply count says so."""
    result = await run_qa(PUSHED, bot_file=BOTS / "mautrix-appservice-bot-no-txn-dedupe.yaml")
    assert result.code == 1, result.report
    scenario = result.scenario(PUSHED)
    failure = scenario["failure"]
    assert failure["stepKind"] == "expect_reply_count", failure
    assert failure["expected"] == "exactly 1 bot reply to 'again'", failure
    assert failure["seen"][0].startswith(("2 replies", "3 replies")), failure
    assert [s["status"] for s in scenario["steps"][:-1]] == ["pass"] * 6, scenario["steps"]


async def test_an_appservice_bot_answering_a_redelivery_only_as_it_stops_fails_on_the_room_it_left(run_qa) -> None:
    """The variant answers the redelivered mention only when told to stop: every step, and the scenario's first
    final look, see one answer, whatever the machine's timing. Only the count judged again on the room as the bot
    left it (after its stop, behind the fences) sees the repeats: the run fails there, naming them."""
    result = await run_qa(PUSHED, bot_file=BOTS / "mautrix-appservice-bot-redelivered-at-stop.yaml")
    assert result.code == 1, result.report
    scenario = result.scenario(PUSHED)
    failure = scenario["failure"]
    assert failure["stepKind"] is None, failure
    assert failure["expected"] == "what the steps checked still holds in the room as the bot left it", failure
    seen = "\n".join(failure["seen"])
    assert "the bot answered 'again' 3 times by the end (expected 1)" in seen, failure
    assert [s["status"] for s in scenario["steps"]] == ["pass"] * 7, scenario["steps"]

async def test_an_appservice_bot_answering_a_redelivery_after_a_later_message_fails_at_the_end(run_qa) -> None:
    """The variant forgets the ids too, but answers the redelivered mention only once the held-back message's
    answer is out (its tasks out of order): the count step, right after that answer, may see one reply. The count
    judged again at the scenario's end sees them all, whatever the order."""
    result = await run_qa(PUSHED, bot_file=BOTS / "mautrix-appservice-bot-redelivered-late.yaml")
    assert result.code == 1, result.report
    scenario = result.scenario(PUSHED)
    failure = scenario["failure"]
    seen = "\n".join(failure["seen"])
    if failure["stepKind"] is None:  # the usual case: a final check
        assert failure["expected"].startswith("what the steps checked still holds"), failure
        assert "the bot answered 'again' 3 times by the end (expected 1)" in seen or \
            "the bot answered 'again' 2 times by the end (expected 1)" in seen, failure
        assert [s["status"] for s in scenario["steps"]] == ["pass"] * 7, scenario["steps"]
    else:  # the repeats' answers were already in when the count step looked (the at-stop variant's test above
        # proves the judgement on the room as the bot left it, whatever the timing)
        assert failure["stepKind"] == "expect_reply_count", failure
