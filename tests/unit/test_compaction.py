"""Compaction planning and rewriting (pure), and the transcript's compaction under a brief hold (I/O)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qa.agent.compaction import (
    CompactionLimits,
    local_summary,
    over_limit,
    plan_compaction,
    rewrite_bytes,
    summary_content,
    summary_prompt,
)
from qa.agent.lock import SessionWriteLock, release_all_held
from qa.agent.model import build_messages
from qa.agent.transcript import FencedWriteError, Transcript, claims_of, user_events
from qa.kernel.lock_settings import LockSettings


@pytest.fixture(autouse=True)
def _no_leaked_holds() -> Iterator[None]:
    yield
    release_all_held()


def rec(seq: int | None, kind: str, event: str | None = None, attempt: str = "a", content: Any = "x") -> dict[str, Any]:
    r: dict[str, Any] = {"seq": seq, "attempt": attempt, "kind": kind, "content": content}
    if event is not None:
        r["eventId"] = event
    if seq is None:
        del r["seq"]
    return r


def turns(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        out += [rec(2 * i + 1, "user", f"$e{i}", f"t{i}", f"q{i}"), rec(2 * i + 2, "assistant", f"$e{i}", f"t{i}")]
    return out


LIMITS = CompactionLimits(max_records=6, max_bytes=10_000, keep_records=2)


def test_within_limits_nothing_is_planned() -> None:
    assert plan_compaction(turns(3), 100, LIMITS) is None  # exactly max_records is still within


def test_over_the_record_limit_folds_all_but_the_kept_tail() -> None:
    plan = plan_compaction(turns(4), 100, LIMITS)
    assert plan is not None
    assert plan.reason == "records"
    assert plan.cut_seq == 6 and [r["seq"] for r in plan.folded] == [1, 2, 3, 4, 5, 6]
    assert plan.last_seq == 8


def test_over_the_byte_limit_alone_compacts() -> None:
    assert over_limit(3, 10_001, LIMITS) == "bytes"
    assert over_limit(3, 10_000, LIMITS) is None
    plan = plan_compaction(turns(3), 10_001, LIMITS)
    assert plan is not None and plan.reason == "bytes" and plan.cut_seq == 4


def test_an_open_turn_is_never_folded() -> None:
    # $e1 has no answer yet (its turn is in model I/O): the prefix stops before its user record.
    records = [*turns(1), rec(3, "user", "$e1", "t1"), rec(4, "user", "$e2", "t2"), rec(5, "assistant", "$e2", "t2"),
               rec(6, "user", "$e3", "t3"), rec(7, "assistant", "$e3", "t3"), rec(8, "user", "$e4"), rec(9, "notice")]
    plan = plan_compaction(records, 100, LIMITS)
    assert plan is not None and plan.cut_seq == 2


def test_a_prefix_of_one_record_is_not_worth_a_rewrite() -> None:
    records = [rec(1, "summary", content={"text": "s"}), rec(2, "user", "$open"), rec(3, "notice"),
               rec(4, "notice"), rec(5, "notice"), rec(6, "notice"), rec(7, "notice")]
    assert plan_compaction(records, 100, LIMITS) is None


def test_records_without_seq_end_the_prefix() -> None:
    records = [*turns(1), rec(None, "notice"), *turns(3)[2:]]
    plan = plan_compaction(records, 100, LIMITS)
    assert plan is not None and plan.cut_seq == 2


def test_summary_content_carries_events_and_claims_also_from_an_earlier_summary() -> None:
    earlier = rec(2, "summary", content={"text": "old", "events": ["$old"], "claims": {"$old": ["t0"]}})
    folded = [earlier, rec(3, "user", "$e1", "t1"), rec(4, "assistant", "$e1", "t1"), rec(5, "skipped", "$e2", "t2"),
              rec(6, "tool", "$e1", "t1")]
    content = summary_content(folded, "text")
    assert content["events"] == ["$old", "$e1"]
    assert content["claims"] == {"$old": ["t0"], "$e1": ["t1"], "$e2": ["t2"]}
    assert (content["folded"], content["fromSeq"], content["toSeq"]) == (5, 2, 6)


def test_rewrite_keeps_what_landed_and_refuses_a_changed_prefix() -> None:
    prefix = b'{"seq":1}\n{"seq":2}\n'
    current = prefix + b'{"seq":3}\n{"seq":4,"late":true}\n'
    assert rewrite_bytes(current, prefix, b"S\n") == b'S\n{"seq":3}\n{"seq":4,"late":true}\n'
    # Someone compacted in between, or the file is shorter than planned: nothing is written.
    assert rewrite_bytes(b'S\n{"seq":3}\n', prefix, b"S\n") is None
    assert rewrite_bytes(prefix[:-1], prefix, b"S\n") is None
    assert rewrite_bytes(current, b"", b"S\n") is None


def test_summary_prompt_and_local_summary_show_the_folded_lines() -> None:
    folded = [rec(1, "summary", content={"text": "before"}), rec(2, "user", "$a", content="hello"),
              rec(3, "assistant", "$a", content="hi"), rec(4, "tool", "$a", content={"name": "exec"})]
    prompt = summary_prompt(folded)
    assert prompt.startswith("Summarize the earlier conversation")
    assert "earlier: before\nuser: hello\nassistant: hi" in prompt and "exec" not in prompt
    assert local_summary(folded) == "earlier: before\nuser: hello\nassistant: hi"
    assert local_summary([rec(1, "user", "$a", content="y" * 1000)]) == "user: " + "y" * 300


# --- I/O: the transcript's rewrite under a hold ---------------------------------------------------------


def test_prepare_on_a_missing_or_short_transcript_plans_nothing(tmp_path: Path) -> None:
    assert Transcript(tmp_path / "none.jsonl").prepare_compaction(LIMITS) is None
    fill(tmp_path / "s.jsonl", 3)
    assert Transcript(tmp_path / "s.jsonl").prepare_compaction(LIMITS) is None


def test_corrupt_lines_after_the_prefix_are_kept_and_inside_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    fill(path, 1)
    with path.open("a") as f:
        f.write("not json\n")
    fill(path, 3)  # seqs 3..8 continue after the corrupt line
    with path.open("a") as f:
        f.write("also not json\n")
    prepared = Transcript(path).prepare_compaction(LIMITS)
    assert prepared is not None and prepared.prefix.count(b"not json") == 1
    with SessionWriteLock(path, LockSettings()).acquire_sync("c", "compaction") as hold:
        assert Transcript(path).compact(hold, prepared, {"text": "s"}) == (0, 3)
    assert path.read_text().count("not json") == 1 and path.read_text().endswith("also not json\n")


def fill(path: Path, n: int) -> list[dict[str, Any]]:
    lock = SessionWriteLock(path, LockSettings())
    transcript = Transcript(path)
    with lock.acquire_sync("writer", "test") as hold:
        for i in range(n):
            transcript.append(hold, {"kind": "user", "eventId": f"$e{i}", "content": f"q{i}"})
            transcript.append(hold, {"kind": "assistant", "eventId": f"$e{i}", "content": f"a{i}"})
    return transcript.read()


def test_compact_replaces_the_prefix_atomically_and_keeps_a_landed_record(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    fill(path, 4)
    transcript = Transcript(path)
    prepared = transcript.prepare_compaction(LIMITS)
    assert prepared is not None and prepared.plan.cut_seq == 6
    lock = SessionWriteLock(path, LockSettings())
    # A message lands between the plan and the rewrite (while the summary is being written).
    with lock.acquire_sync("inbound", "inbound") as hold:
        transcript.append(hold, {"kind": "user", "eventId": "$late", "content": "late"})
    content = summary_content(prepared.plan.folded, "the summary")
    with lock.acquire_sync("compact-1", "compaction") as hold:
        assert transcript.compact(hold, prepared, content) == (1, 4)
    after = transcript.read()
    assert [r["kind"] for r in after] == ["summary", "user", "assistant", "user"]
    assert [r["seq"] for r in after] == [6, 7, 8, 9]
    assert after[0]["attempt"] == "compact-1" and after[0]["content"]["text"] == "the summary"
    assert [r.get("eventId") for r in after].count("$late") == 1
    # Every line is valid JSON, no aside file is left, and the next append continues the seq.
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]
    with lock.acquire_sync("next", "x") as hold:
        assert transcript.append(hold, {"kind": "notice", "content": "n"})["seq"] == 10
    # What the folded records proved survives: seen events and claims, and the model still gets the summary.
    assert {"$e0", "$e3", "$late"} <= user_events(after)
    assert claims_of(after)["$e0"] == {"writer"}
    assert Transcript(path).prepare_compaction(LIMITS) is None  # 5 records now: within the limit
    messages = build_messages("sys", after)
    assert messages[1] == {"role": "system", "content": "Summary of the earlier conversation: the summary"}


def test_compact_refuses_without_the_lock_and_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    fill(path, 4)
    prepared = Transcript(path).prepare_compaction(LIMITS)
    assert prepared is not None
    before = path.read_bytes()
    hold = SessionWriteLock(path, LockSettings()).acquire_sync("compact-1", "compaction")
    hold.release()
    with pytest.raises(FencedWriteError):
        Transcript(path).compact(hold, prepared, {"text": "s"})
    assert path.read_bytes() == before


def test_compact_after_a_concurrent_compaction_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    fill(path, 4)
    prepared = Transcript(path).prepare_compaction(LIMITS)
    assert prepared is not None
    lock = SessionWriteLock(path, LockSettings())
    with lock.acquire_sync("c1", "compaction") as hold:
        assert Transcript(path).compact(hold, prepared, {"text": "first"}) is not None
    before = path.read_bytes()
    with lock.acquire_sync("c2", "compaction") as hold:
        assert Transcript(path).compact(hold, prepared, {"text": "second"}) is None
    assert path.read_bytes() == before


# --- what the mutation run of qa/agent/compaction.py found untested ---------------------------------------


def test_defaults_are_the_documented_ones_and_values_are_frozen() -> None:
    import dataclasses

    limits = CompactionLimits()
    assert (limits.max_records, limits.max_bytes, limits.keep_records) == (400, 1_000_000, 40)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.keep_records = 1  # type: ignore[misc]
    plan = plan_compaction(turns(4), 100, LIMITS)
    assert plan is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.cut_seq = 1  # type: ignore[misc]


def test_a_failed_turn_is_closed_and_its_claim_kept() -> None:
    records = [rec(1, "user", "$f", "t0"), rec(2, "failed", "$f", "t0"), *[{**r, "seq": r["seq"] + 2}
                                                                         for r in turns(3)]]
    plan = plan_compaction(records, 100, LIMITS)
    assert plan is not None and plan.cut_seq == 6
    assert summary_content(plan.folded, "s")["claims"]["$f"] == ["t0"]


def test_a_bool_seq_is_not_a_seq() -> None:
    records = [*turns(1), {**rec(3, "notice"), "seq": True}, *turns(3)[2:]]
    plan = plan_compaction(records, 100, LIMITS)
    assert plan is not None and plan.cut_seq == 2


def test_summary_content_skips_records_without_an_event_and_reads_mapping_content_only_of_summaries() -> None:
    folded = [rec(1, "notice"), rec(2, "user", "$a", "t1"), rec(3, "skipped", "$a", "t1", {"reason": "empty"})]
    content = summary_content(folded, "s")
    assert content["events"] == ["$a"] and content["claims"] == {"$a": ["t1"]}
    assert (summary_content([], "s")["fromSeq"], summary_content([], "s")["toSeq"]) == (0, 0)


def test_summary_lines_of_every_kind_and_their_limits() -> None:
    folded = [rec(1, "summary", content={}), rec(2, "summary", content={"text": "z" * 2000}),
              rec(3, "notice", content="n"), rec(4, "memory", content="m")]
    assert local_summary(folded).split("\n") == ["earlier: ", "earlier: " + "z" * 1200, "notice: n", "memory: m"]
    assert summary_prompt([rec(1, "user", content="hi")]) == (
        "Summarize the earlier conversation below in a few sentences. Keep every fact, name, number and "
        "instruction a later answer may need.\n\nuser: hi")


def test_records_without_seq_never_count_as_landed() -> None:
    from qa.agent.compaction import CompactionPlan, landed_after

    plan = CompactionPlan(cut_seq=0, folded=(), reason="records", last_seq=0)
    assert landed_after([{"kind": "notice"}, {"seq": 1}], plan) == 1
