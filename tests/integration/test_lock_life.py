"""The session lock's whole life on real runs: compaction, post-turn work, takeover, startup cleanup and the
skipped-prompt path pass with the embedded agent, and each scenario catches its bug (test-only `testBugs`).

Two runs in all (each boots Synapse): the five scenarios as they are, then the same five against an agent with
all five bugs switched on. Every bug only acts on its own scenario's path (compaction, the post-turn note, the
stalled reply, startup, the skipped prompt), so each scenario's failure is its own bug's evidence.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import MUTANT_STEP_CAP_S

pytestmark = pytest.mark.integration

SCENARIOS = (
    "matrix-session-compaction-lock",
    "matrix-post-turn-hook-unlocked",
    "matrix-lock-max-hold-takeover",
    "matrix-startup-stale-lock-cleanup",
    "matrix-skipped-prompt-releases-lock",
)
BUGS = ["compact-under-model", "hook-under-lock", "skip-fence", "skip-startup-cleanup", "leak-skipped"]


async def test_the_lock_life_scenarios_pass_with_their_evidence(run_qa) -> None:
    result = await run_qa(*SCENARIOS)
    assert result.code == 0, result.report
    lock = result.summary["lock"]
    assert lock["verdict"] == "pass", lock["reasons"]
    kinds = {k["kind"] for k in lock["holdKinds"]}
    assert {"compaction", "post-turn", "skipped-prompt", "inbound", "turn"} <= kinds, kinds
    takeovers = lock["takeoverList"]
    assert [t["reason"] for t in takeovers if not t["startup"]] == ["max-hold"]
    assert [t["reason"] for t in takeovers if t["startup"]] == ["owner-dead"]
    assert all(t["after"] == [] for t in takeovers), takeovers
    assert lock["startupReclaims"] == 1
    report = result.report
    assert "Holds by kind:" in report and "compaction ×" in report and "post-turn ×" in report
    assert "startup reclaim session=" in report and "then: nothing sent, written, run or removed" in report
    # The summary and memory calls were held until the scenario released them (release_hold), and every later
    # call under those holds went straight through: no call was left held when a bot stopped, so no fault served.
    by_id = {s["id"]: s for s in result.summary["scenarios"]}
    assert [by_id[sid].get("faultHits") or [] for sid in SCENARIOS[:2]] == [[], []]


async def test_each_scenario_catches_its_bug(run_qa) -> None:
    # All five side by side: three of the bugs are caught by a trace record that never comes, each a 30 s wait,
    # which two jobs (the default on 2 cores) would run one after the other. The scenarios are independent (own
    # users, rooms and bot), and the jobs count changes no outcome (test_jobs_and_shards). The waits that never end
    # are cut to MUTANT_STEP_CAP_S: each still fails at its step (below), with the record it waited for named.
    result = await run_qa(*SCENARIOS, bot_overrides={"sessionLife.testBugs": BUGS}, jobs=len(SCENARIOS),
                          step_timeout_cap_s=MUTANT_STEP_CAP_S)
    assert result.code == 1
    failed = {s["id"]: s for s in result.summary["scenarios"]}
    assert all(failed[sid]["status"] == "fail" for sid in SCENARIOS), {k: v["status"] for k, v in failed.items()}
    steps = {sid: (failed[sid]["failure"]["stepKind"], failed[sid]["failure"]["step"]) for sid in SCENARIOS}
    assert steps == {"matrix-session-compaction-lock": ("expect_trace", 11),
                     "matrix-post-turn-hook-unlocked": ("expect_trace", 5),
                     "matrix-lock-max-hold-takeover": ("expect_trace", 5),
                     "matrix-startup-stale-lock-cleanup": ("expect_trace", 6),
                     "matrix-skipped-prompt-releases-lock": ("expect_trace", 2)}, steps

    def failure(sid: str) -> str:
        f = failed[sid]["failure"]
        return f"{f['expected']} {' '.join(f['seen'])}"

    # The message landing during the held summary (memory) call could not take the lock while it was held: the
    # step failed before its release_hold, and the held call ended only when the harness stopped the bot, which
    # the scenario's faults served say.
    for sid in ("matrix-session-compaction-lock", "matrix-post-turn-hook-unlocked"):
        assert "lock.acquire" in failure(sid) and "waitMs <= 250" in failure(sid), failure(sid)
        hangs = [h["what"] for h in failed[sid].get("faultHits") or []]
        assert any(h.startswith("hang: ended by the harness") for h in hangs), hangs
    # The stale attempt was never stopped: no turn.stale.
    assert "turn.stale" in failure("matrix-lock-max-hold-takeover")
    assert "lock.reclaim" in failure("matrix-startup-stale-lock-cleanup")
    assert "turn.skipped" in failure("matrix-skipped-prompt-releases-lock")

    lock = result.summary["lock"]
    assert lock["verdict"] == "fail"
    reasons = "\n".join(lock["reasons"])
    assert "(compaction): lock held during model I/O" in reasons
    assert "(post-turn): lock held during model I/O" in reasons
    assert "its hold was taken over (max-hold) but it then wrote the transcript, sent a reply" in reasons
    assert "turn ended (skipped) with its lock still held (skip)" in reasons
    assert "lock held during model I/O" in result.report
