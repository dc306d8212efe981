"""A bot we did not write, tested through its bot file: the independent nio bot in tests/bots passes the generic
scenarios, skips the trace-only ones with their reason, and each of its buggy variants fails readably."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import MUTANT_STEP_CAP_S

pytestmark = pytest.mark.integration

BOTS = Path(__file__).resolve().parents[1] / "bots"
GENERIC = ["canary", "matrix-mention-gating", "matrix-thread-follow-up", "matrix-thread-isolation",
           "matrix-top-level-reply-shape", "matrix-restart-resume"]
TRACE_ONLY = {"matrix-reaction-notification": "lacks 'trace'", "matrix-allowlist-block": "lacks 'policy'",
              "matrix-session-lock-contention": "lacks 'trace'", "matrix-e2ee-basic-reply": "lacks 'e2ee'"}


async def test_generic_scenarios_pass_and_trace_only_ones_are_skipped_with_the_reason(run_qa) -> None:
    result = await run_qa(*GENERIC, *TRACE_ONLY, bot_file=BOTS / "nio-reply-bot.yaml")
    assert result.code == 0, result.report
    assert result.summary["status"] == "pass"
    bot = result.summary["environment"]["bot"]
    assert bot["name"] == "nio-reply-bot" and bot["capabilities"] == ["threads", "restart"]
    for scenario_id in GENERIC:
        assert result.scenario(scenario_id)["status"] == "pass", result.scenario(scenario_id)
    for scenario_id, reason in TRACE_ONLY.items():
        skipped = result.scenario(scenario_id)
        assert skipped["status"] == "skip" and reason in skipped["details"], skipped
    # The evidence it rested on is named, never silently the embedded agent's trace.
    methods = {step["method"] for s in result.summary["scenarios"] for step in s["steps"] if step["method"]}
    assert methods <= {"relation", "journal", "order"} and {"relation", "order"} <= methods
    gating = result.scenario("matrix-mention-gating")["negativeChecks"]
    assert [c["method"] for c in gating] == ["order", "order"]
    assert all("NOT CHECKED" in c["notes"][0] for c in gating), "the reason cannot be checked without a trace"
    lock = result.summary["lock"]
    assert lock["verdict"] == "n/a" and lock["reasons"] == ["n/a (the bot reports no lock records)"]
    assert lock["modelRequests"] > 0, "the journal saw the model requests: never '0 model requests'"
    assert "n/a (the bot reports no lock records)" in result.report
    log = (result.dir / "scenarios" / "canary" / "bot.log").read_text()
    assert "syncing as @" in log, "stdout and stderr both land in bot.log"


async def test_a_bot_configured_through_its_own_rendered_config_file(run_qa) -> None:
    result = await run_qa("canary", "matrix-thread-follow-up", bot_file=BOTS / "nio-reply-bot-ini.yaml")
    assert result.code == 0, result.report
    token = next(s for s in result.secrets if len(s) > 30)  # the bot's access token is a run secret
    for path in result.dir.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path


async def test_bot_command_shortcut_with_joined_readiness(run_qa) -> None:
    result = await run_qa("canary", "matrix-mention-gating",
                          bot_command=f"python {BOTS / 'nio_reply_bot.py'}")
    assert result.code == 0, result.report
    assert result.summary["environment"]["bot"]["ready"] == "the bot's join in every room"


async def test_answering_threads_at_the_top_level_fails_with_the_shape(run_qa) -> None:
    result = await run_qa("matrix-thread-follow-up", bot_file=BOTS / "nio-reply-bot-thread-top-level.yaml")
    assert result.code == 1
    failure = result.scenario("matrix-thread-follow-up")["failure"]
    assert failure["stepKind"] == "expect_reply"
    assert any("expected rel_type m.thread" in line for line in failure["seen"]), failure
    assert "expected rel_type m.thread" in result.report


async def test_answering_unmentioned_messages_is_caught_by_order_evidence(run_qa) -> None:
    result = await run_qa("matrix-mention-gating", bot_file=BOTS / "nio-reply-bot-answer-unmentioned.yaml")
    assert result.code == 1
    scenario = result.scenario("matrix-mention-gating")
    check = scenario["negativeChecks"][0]
    assert check["method"] == "order" and check["unwantedReplies"], check
    assert check["controlReplyEventId"], "the control was answered: the bot was alive, and still answered"
    seen = "\n".join(scenario["failure"]["seen"])
    assert check["unwantedReplies"][0] in seen and "replies to the trigger" in seen
    assert check["unwantedReplies"][0] in result.report


async def test_a_bot_that_never_becomes_ready_is_named_with_its_log(run_qa) -> None:
    result = await run_qa("canary", bot_file=BOTS / "nio-reply-bot-never-ready.yaml")
    assert result.code == 1
    canary = result.scenario("canary")
    assert "did not become ready" in canary["details"] and "bot.log" in canary["details"]
    assert "a log line matching /^syncing as @/" in canary["details"]
    # Well before the scenario's own 60 s timeout: the bot file's ready timeout (8 s) decides.
    assert canary["durationMs"] < 40_000
    assert "deliberate bug enabled: never-ready" in "\n".join(canary["failure"]["seen"]), "the log tail is shown"


async def test_a_bot_killed_mid_turn_fails_at_once_and_the_run_finishes(run_qa) -> None:
    result = await run_qa("canary", bot_file=BOTS / "nio-reply-bot-die-mid-turn.yaml")
    assert result.code == 1
    canary = result.scenario("canary")
    seen = "\n".join(canary["failure"]["seen"])
    assert "killed by SIGKILL unexpectedly" in seen and "bot.log" in seen, seen
    assert "deliberate bug enabled: die-mid-turn" in seen
    assert canary["durationMs"] < 30_000, "not the scenario's 60 s timeout"


async def test_a_bot_tracing_only_its_lock_holds_is_judged_against_the_journal(run_qa) -> None:
    clean = await run_qa("canary", "matrix-thread-follow-up", bot_file=BOTS / "nio-reply-bot-lock-trace.yaml")
    assert clean.code == 0, clean.report
    lock = clean.summary["lock"]
    assert lock["verdict"] == "pass", lock
    assert any("taken from the provider journal" in r for r in lock["reasons"]), lock["reasons"]
    assert lock["modelRequests"] >= 3

    # The variant holds its lock across every model request: the canary's one shows it (the clean run above needs
    # the thread's two as well, for its count of requests judged).
    held = await run_qa("canary", bot_file=BOTS / "nio-reply-bot-lock-trace-lock-across-model.yaml")
    assert held.code == 1, "every scenario passed, but the lock was held across model I/O"
    lock = held.summary["lock"]
    assert lock["verdict"] == "fail", lock
    assert any("while the provider journal shows a model request in flight" in r for r in lock["reasons"])
    assert "lock held" in held.report or "provider journal" in held.report


def _helpers(marker: str) -> list[int]:
    """Processes whose argv says `escaping-helper` and names `marker` (the test's tmp dir, in the state dir)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"escaping-helper" in argv and any(marker.encode() in a for a in argv):
            found.append(int(entry.name))
    return found


async def test_a_helper_that_left_the_bots_session_and_environment_is_stopped_at_teardown(
        run_qa, tmp_path: Path) -> None:
    """The harness is a child subreaper: the helper, orphaned when the bot stops, comes back to it and is found."""
    result = await run_qa("canary", bot_file=BOTS / "nio-reply-bot-escaping-helper.yaml")
    assert result.code == 0, result.report
    log = (result.dir / "scenarios" / "canary" / "bot.log").read_text()
    assert "escaping helper started: pid" in log, "the bug ran"
    pid = int(log.split("escaping helper started: pid ")[1].split()[0])
    assert not Path(f"/proc/{pid}").exists(), "stopped and reaped at the bot's teardown, not left to init"
    assert _helpers(str(tmp_path)) == []


async def test_a_foreign_bot_is_judged_by_behaviour_on_provider_faults(run_qa) -> None:
    """Issue 28: a bot that retries the model's 500s and then posts one top-level notice in its own words passes
    matrix-provider-5xx-retry (the agent's wording is not asked of it, and the step says so); a bot that does not
    take the launch's model timeout skips matrix-provider-hang-timeout with the reason."""
    result = await run_qa("matrix-provider-5xx-retry", "matrix-provider-hang-timeout",
                          bot_file=BOTS / "nio-reply-bot-model-retries.yaml")
    assert result.code == 0, result.report
    retry = result.scenario("matrix-provider-5xx-retry")
    assert retry["status"] == "pass", retry
    notice = retry["steps"][4]
    assert "wording 'HTTP 500 after 3 attempts' NOT CHECKED" in notice["detail"], notice
    hang = result.scenario("matrix-provider-hang-timeout")
    assert hang["status"] == "skip" and "model-timeout" in hang["details"], hang


async def test_scenarios_for_clients_unlike_ours_on_the_nio_bot(run_qa) -> None:
    """Issue 27's generic scenarios against a bot we did not write: it honours m.mentions and explicit quotes in
    threads, and misses a legacy client's pill (without m.mentions it looks only for its id in the body) and a DM
    (it wants a mention there too)."""
    passing = ["matrix-mention-display-name", "matrix-mention-metadata-only", "matrix-thread-explicit-quote"]
    result = await run_qa(*passing, "matrix-mention-pill-without-m-mentions", "matrix-thread-preexisting",
                          "matrix-dm-misclassified-group", "matrix-bot-loop-guard", "matrix-bot-loop-guard-peer",
                          bot_file=BOTS / "nio-reply-bot.yaml",
                          step_timeout_cap_s=MUTANT_STEP_CAP_S)  # the missed pill's answer never comes
    assert result.code == 1
    for scenario_id in passing:
        assert result.scenario(scenario_id)["status"] == "pass", result.scenario(scenario_id)
    for scenario_id in passing[:2]:  # the README's "the negative halves NOT CHECKED: it has no trace"
        checks = result.scenario(scenario_id)["negativeChecks"]
        assert checks and all(c["method"] == "order" and "NOT CHECKED" in c["notes"][0] for c in checks), checks
    missed = result.scenario("matrix-mention-pill-without-m-mentions")
    assert missed["status"] == "fail" and (missed["failure"]["stepKind"], missed["failure"]["step"]) == (
        "expect_reply", 2), missed
    assert "a bot reply to step 'legacy_pill'" in missed["failure"]["expected"], missed
    # It follows a thread begun while it was down, but knows only what its own session file recorded.
    forgot = result.scenario("matrix-thread-preexisting")
    assert forgot["status"] == "fail" and forgot["failure"]["step"] == 7, forgot
    assert any("does not carry" in line for line in forgot["failure"]["seen"]), forgot
    # It wants a mention in a direct chat too: the DM control, the scenario's first reply, is never answered.
    dm = result.scenario("matrix-dm-misclassified-group")
    assert dm["status"] == "fail" and dm["failure"]["step"] == 2, dm
    assert dm["failure"]["stepKind"] == "expect_reply" and "'in_dm'" in dm["failure"]["expected"], dm
    for loop_id in ("matrix-bot-loop-guard", "matrix-bot-loop-guard-peer"):  # as the peer it is test_peer_bot's
        loop = result.scenario(loop_id)
        assert loop["status"] == "skip" and "lacks 'trace'" in loop["details"] and "'policy'" in loop["details"], loop
