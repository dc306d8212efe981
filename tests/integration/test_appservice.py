"""Application-service bots (issue 33), with an independent one (tests/bots/mautrix_appservice_bot.py, mautrix-python's
appservice module): the shared Synapse loads the harness's registration at boot and the harness forwards each
scenario's share of the pushed transactions to that scenario's bot. It passes the canary, mention gating and a thread
follow-up side by side; its tokens are in its own processes' environments only and in no artifact; the variant that
answers unmentioned messages fails mention gating, and keeps answering across a homeserver restart; the variant that
answers as a user outside its namespace fails the canary, the failure naming who answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qa.shared.redact import scan_for_secrets
from tests.integration.proc_watch import environs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOTS = REPO / "tests" / "bots"
GENERIC = ["canary", "matrix-mention-gating", "matrix-thread-follow-up"]
TOKENS = (b"MATRIX_QA_AS_TOKEN=", b"MATRIX_QA_HS_TOKEN=")


async def test_an_appservice_bot_passes_and_its_tokens_stay_its_own(run_qa, session_synapse) -> None:
    run = asyncio.ensure_future(run_qa(*GENERIC, bot_file=BOTS / "mautrix-appservice-bot.yaml", jobs=3))
    snapshots = []
    while not run.done():  # bounded by the run's own scenario timeouts
        snapshots.append(environs())
        await asyncio.wait({run}, timeout=0.1)
    result = run.result()
    assert result.code == 0, result.report
    for scenario_id in GENERIC:
        scenario = result.scenario(scenario_id)
        assert scenario["status"] == "pass", scenario
        spoke = {s["account"] for s in scenario["steps"] if s["kind"] == "expect_reply"}
        assert spoke <= {"bot"}, scenario
    host = session_synapse.hs.appservice
    assert host is not None and host.leases == {}, "every scenario's lease ends with it"
    # Only this worker's homeserver's bots: another xdist worker's run has a Synapse and tokens of its own.
    ours = b"MATRIX_QA_AS_TOKEN=" + host.as_token.encode()
    handed = {line.split(b"=", 1)[1] for snap in snapshots for _cmd, environ in snap.values()
              if ours in environ.split(b"\0") for line in environ.split(b"\0") if line.startswith(TOKENS)}
    # One as_token (the registration's) and one hs_token per scenario, never the registration's own hs_token.
    assert host.as_token.encode() in handed and host.hs_token.encode() not in handed
    assert len(handed) == 1 + len(GENERIC), handed
    holders = {cmd for snap in snapshots for cmd, environ in snap.values()
               if any(t in environ for t in [*handed, host.hs_token.encode()])}
    assert holders and all("mautrix_appservice_bot.py" in cmd for cmd in holders), holders
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
    result = await run_qa("canary", bot_file=BOTS / "mautrix-appservice-bot-answer-outside-namespace.yaml")
    assert result.code == 1, result.report
    failure = result.scenario("canary")["failure"]
    assert failure["stepKind"] == "expect_reply", failure
    strays = [line for line in failure["seen"] if "from=@mqa_as-stray-" in line]
    assert strays and all(line.endswith("(from none of the bot's accounts)") for line in strays), failure
    # The stray's answer is the model's answer to the canary: only the sender is wrong.
    assert any("m.room.message" in line for line in strays), failure
