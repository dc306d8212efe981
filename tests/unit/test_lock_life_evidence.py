"""Lock evidence over the lock's whole life: hold kinds, compaction/post-turn attempts, leaks at turn end,
takeovers and startup reclaims with what the stale attempt did afterwards."""

from __future__ import annotations

from typing import Any

from qa.report.lock_evidence import LEAK_GRACE_MS, analyze_lock_evidence, hold_kind
from qa.report.markdown import lock_view


def rec(t: float, type_: str, attempt: str, session: str = "!a", **fields: Any) -> dict[str, Any]:
    return {"t": t, "type": type_, "session": session, "attempt": attempt, **fields}


def model(t0: float, t1: float, attempt: str, **extra: Any) -> list[dict[str, Any]]:
    return [rec(t0, "model.request.start", attempt, requestId=f"r-{attempt}", **extra),
            rec(t1, "model.request.end", attempt, requestId=f"r-{attempt}", ok=True)]


def hold(t0: float, t1: float | None, attempt: str, purpose: str, **release: Any) -> list[dict[str, Any]]:
    out = [rec(t0, "lock.acquire", attempt, purpose=purpose)]
    if t1 is not None:
        out.append(rec(t1, "lock.release", attempt, purpose=purpose, heldMs=t1 - t0, **release))
    return out


def compaction(early: bool) -> list[dict[str, Any]]:
    """A compaction attempt: summary call 100→600, rewrite hold after it (or, the bug, around it)."""
    if early:
        return [*hold(95, 610, "compact-1", "compaction"), *model(100, 600, "compact-1", purpose="compaction")]
    return [*model(100, 600, "compact-1", purpose="compaction"), *hold(601, 610, "compact-1", "compaction")]


def test_hold_kinds_come_from_purposes() -> None:
    assert [hold_kind(p) for p in ("reply", "inbound", "skip", "post-turn", "compaction", "turn", "zzz")] == \
        ["turn", "inbound", "skipped-prompt", "post-turn", "compaction", "whole-turn", "other"]


def test_compaction_with_a_brief_hold_passes_and_is_listed_by_kind() -> None:
    ev = analyze_lock_evidence(compaction(early=False) + hold(300, 301, "turn-2", "inbound"))
    assert ev.verdict == "pass", ev.reasons
    assert [(k.kind, k.count, k.longest_ms) for k in ev.hold_kinds] == [("compaction", 1, 9.0), ("inbound", 1, 1.0)]
    [turn] = ev.turns
    assert turn.kind == "compaction"


def test_compaction_holding_the_lock_across_its_summary_call_fails_naming_the_kind() -> None:
    ev = analyze_lock_evidence(compaction(early=True))
    assert ev.verdict == "fail"
    assert ev.reasons == ["session !a attempt compact-1 (compaction): lock held during model I/O for 500.0ms"]


def test_post_turn_hook_under_the_lock_fails_the_same_way() -> None:
    records = [*hold(0, 700, "memory-1", "post-turn"), *model(10, 690, "memory-1")]
    ev = analyze_lock_evidence(records)
    assert ev.reasons == ["session !a attempt memory-1 (post-turn): lock held during model I/O for 680.0ms"]


def skipped_turn(release_at: float | None) -> list[dict[str, Any]]:
    return [rec(0, "turn.start", "t1", eventId="$1"), *hold(1, release_at, "t1", "skip"),
            rec(10, "turn.end", "t1", eventId="$1", outcome="skipped"), *model(20, 30, "t2")]


def test_a_turn_that_ends_with_its_lock_held_is_a_leak() -> None:
    assert analyze_lock_evidence(skipped_turn(release_at=9)).verdict == "pass"
    # A release just after turn.end is a bot's ordering, not a leak.
    assert analyze_lock_evidence(skipped_turn(release_at=10 + LEAK_GRACE_MS)).verdict == "pass"
    for leak in (10 + LEAK_GRACE_MS + 1, None):
        ev = analyze_lock_evidence(skipped_turn(release_at=leak))
        assert "session !a attempt t1 (skipped-prompt): turn ended (skipped) with its lock still held (skip)" \
            in ev.reasons, ev.reasons


def takeover(*after: dict[str, Any], type_: str = "lock.takeover") -> list[dict[str, Any]]:
    return [rec(0, "turn.start", "t1", eventId="$1"), *model(1, 5, "t1"), rec(6, "lock.acquire", "t1", purpose="reply"),
            rec(400, type_, "t2", previous={"pid": 7, "attempt": "t1", "ageMs": 394.0}, reason="max-hold"),
            *after]


def test_a_clean_takeover_is_listed_with_nothing_after_it() -> None:
    ev = analyze_lock_evidence(takeover(rec(900, "lock.release", "t1", purpose="reply", heldMs=894, removed=False),
                                        rec(901, "turn.stale", "t1")))
    assert ev.verdict == "pass", ev.reasons
    [tk] = ev.takeover_list
    assert (tk.previous_attempt, tk.by_attempt, tk.previous_pid, tk.previous_age_ms, tk.after, tk.startup) == \
        ("t1", "t2", 7, 394.0, [], False)
    assert ev.takeovers == 1 and ev.startup_reclaims == 0


def test_a_stale_attempt_that_writes_sends_runs_or_cleans_up_fails() -> None:
    ev = analyze_lock_evidence(takeover(
        rec(900, "lock.release", "t1", purpose="reply", heldMs=894, removed=True),
        rec(901, "transcript.write", "t1", kind="assistant"), rec(902, "reply.sent", "t1"),
        rec(903, "exec.run", "t1"), rec(904, "reply.sent", "t1"),
        # Another attempt's output, and the same attempt in another session, are not its doing.
        rec(905, "reply.sent", "t2"), rec(906, "exec.run", "t1", session="!b")))
    assert ev.verdict == "fail"
    assert ev.reasons == ["session !a attempt t1: its hold was taken over (max-hold) but it then wrote the "
                          "transcript, sent a reply, ran a tool, removed a lock file when it released"]


def test_output_before_the_takeover_is_not_held_against_it() -> None:
    records = takeover()
    records.insert(2, rec(3, "transcript.write", "t1", kind="tool"))
    assert analyze_lock_evidence(records).verdict == "pass"


def test_a_startup_reclaim_ends_the_dead_holders_hold_and_is_counted_apart() -> None:
    ev = analyze_lock_evidence(takeover(type_="lock.reclaim"))
    assert ev.verdict == "pass", ev.reasons
    assert (ev.startup_reclaims, ev.takeovers) == (1, 0)
    assert ev.takeover_list[0].startup is True
    # The dead holder's hold ends at the reclaim, not at the trace's end.
    assert ev.longest_hold_ms == 394.0


def test_the_report_shows_kinds_and_takeovers() -> None:
    dumped = analyze_lock_evidence(takeover(type_="lock.reclaim") + compaction(early=False)).model_dump(
        mode="json", by_alias=True)
    view = lock_view(dumped)
    assert view is not None
    assert "compaction ×1 (longest 9.0 ms)" in view["holdKinds"]
    assert view["takeovers"] == ["startup reclaim session=!a t1 (pid 7, held 394 ms) by t2 reason=max-hold; "
                                 "then: nothing sent, written, run or removed"]
    assert any(t["attempt"] == "compact-1 (compaction)" for t in view["turns"])
    assert "1 startup reclaim" in view["counters"]
