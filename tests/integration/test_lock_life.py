"""The session lock's whole life on real runs: compaction, post-turn work, takeover, startup cleanup and the
skipped-prompt path pass with the embedded agent, and each scenario catches its bug (test-only `testBugs`).

Two runs in all (each boots Synapse): the five scenarios as they are, then the same five against an agent with
all five bugs switched on. Every bug only acts on its own scenario's path (compaction, the post-turn note, the
stalled reply, startup, the skipped prompt), so each scenario's failure is its own bug's evidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import MUTANT_STEP_CAP_S, REPO, run_in_process

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


def _leak_bound_only(directory: Path, max_hold_ms: int | None) -> str:
    """matrix-skipped-prompt-releases-lock with its one skip and its bound only: no `lockReleased` claim matched,
    no `!ping` (whose own skip would wait on the leak), at this maxHoldMs (None: the scenario's own lock settings).
    What is left to catch a leaked lock is the next append's waitMs bound."""
    data = yaml.safe_load((REPO / "scenarios" / "matrix-skipped-prompt-releases-lock.yaml").read_text())
    steps = data["steps"]
    data["id"] = f"skipped-leak-bound-{max_hold_ms or 'scenario'}"
    if max_hold_ms is not None:
        data["bot"] = {"sessionWriteLock": {"maxHoldMs": max_hold_ms}}
    data["steps"] = [steps[0], {"expect_trace": {"type": "turn.skipped", "to": "empty", "match": {"reason": "empty"}}},
                     *steps[5:]]
    assert [next(iter(s)) for s in data["steps"]] == ["send", "expect_trace", "send", "expect_trace", "expect_reply"]
    (directory / f"{data['id']}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return str(data["id"])


async def test_the_skipped_prompts_wait_bound_catches_a_leak_whatever_its_age(tmp_path: Path) -> None:
    """A bot that leaks the skipped turn's lock, judged by the scenario's waitMs bound alone (its own claim
    `lockReleased` taken out). With a maxHoldMs the leak outlives (200 ms here; the default 5 s on a machine slow
    enough between the two messages) the next append takes it over within the bound: it passes, the bug unseen.
    With the scenario's own settings (maxHoldMs and staleMs above its timeout) the append can only wait for the
    leak: the bound fails it."""
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    moot, held = _leak_bound_only(scenarios, 200), _leak_bound_only(scenarios, None)
    result = await run_in_process(tmp_path / "run", tmp_path / "console.log", scenario_ids=[moot, held],
                                  scenario_paths=[scenarios], bot_overrides={"sessionLife.testBugs": ["leak-skipped"]},
                                  jobs=2, step_timeout_cap_s=MUTANT_STEP_CAP_S)
    assert result.code == 1
    by_id = {s["id"]: s for s in result.summary["scenarios"]}
    assert by_id[moot]["status"] == "pass", by_id[moot]
    assert by_id[held]["status"] == "fail", by_id[held]
    failure = by_id[held]["failure"]
    assert (failure["stepKind"], failure["step"]) == ("expect_trace", 4), failure
    assert "lock.acquire" in failure["expected"] and "waitMs <= 250" in failure["expected"], failure
