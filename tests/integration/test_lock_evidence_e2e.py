"""Lock-timing evidence on a real run: the narrow lock passes, and the legacy whole-turn lock is caught."""

from __future__ import annotations

import pytest

from tests.integration.conftest import cli
from tests.nothing_early import NOTHING_EARLY

pytestmark = pytest.mark.integration

SCENARIOS = ("canary", "matrix-session-lock-contention")


async def test_narrow_lock_passes_with_evidence(run_qa) -> None:
    result = await run_qa(*SCENARIOS)
    assert result.code == 0, result.report
    lock = result.summary["lock"]
    assert lock["verdict"] == "pass", lock["reasons"]
    assert lock["scope"] == "narrow"
    assert lock["settings"] == {"acquireTimeoutMs": 10000, "staleMs": 30000, "maxHoldMs": 5000}
    assert lock["totalOverlapMs"] == 0
    assert lock["modelRequests"] >= 3
    # Every probe fired while a model call was in flight, and got the lock.
    assert lock["probes"], "no contention probe ran"
    assert all(p.get("acquiredElapsedMs") is not None for p in lock["probes"]), lock["probes"]
    assert any(p.get("duringModelIo") for p in lock["probes"])
    slow_turns = [t for t in lock["turns"] if t["outcome"] == "replied"]
    assert len(slow_turns) == 3 and all(t["overlapMs"] == 0 for t in slow_turns)
    assert "Lock-timing evidence" in result.report and "acquiredElapsedMs" in result.report


async def test_whole_turn_lock_fails_the_evidence_and_the_run(run_qa) -> None:
    # The env override is how CI would flip it; the report must say where the setting came from.
    result = await run_qa(*SCENARIOS, bot_env={"MATRIX_QA_SESSION_WRITE_LOCK_SCOPE": "attempt"})
    assert result.code == 1
    lock = result.summary["lock"]
    assert lock["verdict"] == "fail"
    assert lock["scope"] == "attempt" and lock["sources"]["scope"] == "env"
    assert lock["totalOverlapMs"] > 0
    timed_out = [p for p in lock["probes"] if p.get("timeoutElapsedMs") is not None]
    assert timed_out and all("session file locked (timeout 25ms)" in p["error"] for p in timed_out)
    # The probe on its own (not only the trace's overlap) fails the whole-turn lock: its holder's stamp puts the
    # hold across the model request.
    assert any(p["duringModelIo"] is True and p.get("heldSinceT") is not None for p in timed_out), timed_out
    assert any("contention probe timed out" in r and "while a model request was in flight" in r
               for r in lock["reasons"]), lock["reasons"]
    assert "session file locked (timeout 25ms)" in result.report
    # The contention scenario sees the second message wait behind the whole first turn, when that message reached
    # the bot mid model call. On a loaded machine it can come only after the first turn: nothing was in its way, and
    # the bound says NOT CHECKED (never a pass).
    contention = result.scenario("matrix-session-lock-contention")
    if contention["status"] == "pass":
        assert "NOT CHECKED" in contention["details"], contention
        bound = next(s for s in contention["steps"] if s["kind"] == "expect_trace" and "lock.acquire" in s["detail"])
        assert "reached the bot only after the other message's model request had ended" in bound["detail"], bound
    else:
        assert contention["status"] == "fail" and "waitMs" in contention["failure"]["expected"], contention


async def test_an_append_queued_behind_the_running_turn_fails_the_contention_bound(run_qa) -> None:
    # The bug the lock's own evidence cannot see: the second message's append waits for the first turn's end in a
    # queue, then takes a free lock (waitMs 0). Its lock.acquire came only after the model call it arrived during;
    # on the old step that passed the waitMs bound.
    result = await run_qa("matrix-session-lock-contention",
                          bot_overrides={"sessionLife.testBugs": ["append-behind-turn"]})
    contention = result.scenario("matrix-session-lock-contention")
    if contention["status"] == "pass":  # it reached the bot only after the first call (a loaded machine): unproved
        assert result.code == 0 and "NOT CHECKED" in contention["details"], contention
        return
    assert result.code == 1 and contention["status"] == "fail", contention
    failure = contention["failure"]
    assert "while 'slow' is in model I/O" in failure["expected"], failure
    assert any("waited for the other turn" in line for line in failure["seen"]), failure
    assert result.summary["lock"]["verdict"] == "pass", "the lock itself was never held across model I/O"


# The refusal (the built-in bot file's env_check) comes before the run needs a homeserver or a bot: NOTHING_EARLY
# (tests/nothing_early.py, as test_canary's refusals), so `run` starts importing neither a Synapse nor the agent
# only to stop them unused.
def test_bad_lock_env_value_is_a_usage_error() -> None:
    env_name = "MATRIX_QA_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS"
    proc = cli("run", "--scenario", "canary", *NOTHING_EARLY, env={env_name: "abc"})
    assert proc.returncode == 2
    assert env_name in proc.stderr and "abc" in proc.stderr
    assert "Traceback" not in proc.stderr
