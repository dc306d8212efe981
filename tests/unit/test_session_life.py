"""The session's lock life with a fake model: post-turn work and compaction hold no lock across model I/O, the
skipped-prompt path releases its lock, shutdown before the model call says so. Each test-only bug is shown to
turn the matching check red."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qa.agent.config import SessionLifeConfig
from qa.agent.lock import lock_path_for, release_all_held
from qa.agent.model import ModelReply
from qa.agent.policy import Inbound
from qa.agent.session import SessionManager, transcript_file_name
from qa.agent.turn import context_for
from qa.kernel.lock_settings import LockSettings
from qa.kernel.trace import Trace, read_trace

ROOM = "!r:hs"
BOT = "@bot:hs"
WAIT_S = 10.0


@pytest.fixture(autouse=True)
def _no_leaked_holds() -> Iterator[None]:
    yield
    release_all_held()


class FakeModel:
    """Answers every request with the latest user text; records whether the session lock existed meanwhile."""

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        self.calls: list[tuple[str, bool]] = []

    async def complete(self, messages: list[dict[str, Any]], tools: Any = None, **_: Any) -> ModelReply:
        latest = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        self.calls.append((latest, self.lock_path.exists()))
        await asyncio.sleep(0)
        return ModelReply(text=f"echo {latest}"[:60])


class Harness:
    def __init__(self, tmp_path: Path, life: SessionLifeConfig, settings: LockSettings | None = None) -> None:
        self.trace_path = tmp_path / "trace.jsonl"
        self.trace = Trace(self.trace_path)
        transcript = tmp_path / "sessions" / transcript_file_name(f"{ROOM}/main")
        self.lock_path = lock_path_for(transcript)
        self.model = FakeModel(self.lock_path)
        self.sent: list[str] = []
        self.manager = SessionManager(tmp_path, settings or LockSettings(), self.trace, self.model,  # type: ignore[arg-type]
                                      "sys", self.send, life=life, bot_user_id=BOT)
        self.count = 0

    async def send(self, room: str, text: str, thread: str | None, reply_to: str | None) -> str:
        self.sent.append(text)
        return f"$sent{len(self.sent)}"

    def submit(self, body: str) -> str:
        self.count += 1
        event = f"$e{self.count}"
        self.manager.submit(Inbound(event_id=event, room_id=ROOM, sender="@u:hs", msgtype="m.text", body=body,
                                    mentioned=True))
        return event

    def records(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in read_trace(self.trace_path) if r["type"] == type_]

    async def until(self, type_: str, n: int = 1, **match: Any) -> list[dict[str, Any]]:
        """Bounded wait for the n-th trace record of a type (the workers run on this loop)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                found = [r for r in self.records(type_) if all(r.get(k) == v for k, v in match.items())]
                if len(found) >= n:
                    return found
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.manager.close()
        self.trace.close()


async def test_post_turn_memory_runs_without_the_lock_and_writes_under_a_short_hold(tmp_path: Path) -> None:
    h = Harness(tmp_path, SessionLifeConfig(post_turn_memory=True))
    h.submit("bot: hello")
    await h.until("post_turn.end")
    await h.close()
    assert h.sent == ["echo bot: hello"]
    memory_calls = [locked for text, locked in h.model.calls if text.startswith("Update your memory notes")]
    assert memory_calls == [False]
    purposes = [r["purpose"] for r in h.records("lock.acquire")]
    assert purposes == ["inbound", "reply", "post-turn"]


async def test_hook_under_lock_bug_holds_the_lock_across_the_model_call(tmp_path: Path) -> None:
    h = Harness(tmp_path, SessionLifeConfig(post_turn_memory=True, test_bugs=["hook-under-lock"]))
    h.submit("bot: hello")
    await h.until("post_turn.end")
    await h.close()
    assert [locked for text, locked in h.model.calls if text.startswith("Update")] == [True]


async def _compact(tmp_path: Path, bugs: list[str]) -> Harness:
    life = SessionLifeConfig.model_validate({"compaction": {"maxRecords": 6, "keepRecords": 2}, "testBugs": bugs})
    h = Harness(tmp_path, life)
    for i in range(4):
        h.submit(f"bot: q{i}")
        await h.until("turn.end", i + 1)
    await h.until("compaction.end")
    await h.close()
    return h


async def test_compaction_summary_call_holds_no_lock_and_the_transcript_is_compacted(tmp_path: Path) -> None:
    h = await _compact(tmp_path, [])
    summary_calls = [locked for text, locked in h.model.calls if text.startswith("Summarize the earlier")]
    assert summary_calls == [False]
    [end] = h.records("compaction.end")
    assert (end["outcome"], end["folded"], end["records"]) == ("compacted", 6, 3)
    records = h.manager.session_for(ROOM, None).transcript.read()
    assert [r["kind"] for r in records] == ["summary", "user", "assistant"]
    assert records[0]["content"]["text"].startswith("echo Summarize")


async def test_compact_under_model_bug_is_visible_to_the_same_check(tmp_path: Path) -> None:
    h = await _compact(tmp_path, ["compact-under-model"])
    assert [locked for text, locked in h.model.calls if text.startswith("Summarize")] == [True]


@pytest.mark.parametrize(("body", "reason", "reply"), [("bot:   ", "empty", None), (f"{BOT}: !ping", "command", "pong"),
                                                       ("!PING", "command", "pong")])
async def test_skipped_prompt_claims_releases_and_says_so(tmp_path: Path, body: str, reason: str,
                                                          reply: str | None) -> None:
    h = Harness(tmp_path, SessionLifeConfig(compaction={"enabled": False}))  # type: ignore[arg-type]
    event = h.submit(body)
    [skipped] = await h.until("turn.skipped")
    [end] = await h.until("turn.end")
    assert (skipped["reason"], skipped["lockReleased"], skipped["eventId"]) == (reason, True, event)
    assert end["outcome"] == "skipped"
    assert not h.lock_path.exists()
    assert h.model.calls == []
    assert h.sent == ([reply] if reply else [])
    records = h.manager.session_for(ROOM, None).transcript.read()
    assert [r["kind"] for r in records] == ["user", "skipped"]
    await h.close()


async def test_leak_skipped_bug_leaves_the_lock_and_the_trace_says_so(tmp_path: Path) -> None:
    h = Harness(tmp_path, SessionLifeConfig(test_bugs=["leak-skipped"]))
    h.submit("bot:")
    [skipped] = await h.until("turn.skipped")
    assert skipped["lockReleased"] is False and h.lock_path.exists()
    await h.close()


async def test_shutdown_before_the_model_call_is_a_skipped_turn(tmp_path: Path) -> None:
    # Whole-turn scope: the turn waits for the lock (held elsewhere) before it asks the model; then shutdown.
    settings = LockSettings(scope="attempt", max_hold_ms=60_000, stale_ms=60_000)
    h = Harness(tmp_path, SessionLifeConfig(), settings)
    session = h.manager.session_for(ROOM, None)
    real = session.lock.acquire
    waiting = asyncio.Event()

    async def acquire(attempt: str, purpose: str, timeout_ms: int | None = None) -> Any:
        if purpose == "turn":  # the lock is busy elsewhere: this wait only ends by cancellation
            waiting.set()
            await asyncio.Event().wait()
        return await real(attempt, purpose, timeout_ms)

    session.lock.acquire = acquire  # type: ignore[method-assign]
    h.submit("bot: hello")
    await asyncio.wait_for(waiting.wait(), WAIT_S)
    await h.close()
    skipped = h.records("turn.skipped")
    assert [(r["reason"], r["lockReleased"]) for r in skipped] == [("shutdown", True)]
    assert h.records("turn.end")[-1]["outcome"] == "cancelled"
    assert h.model.calls == []


def test_context_for_ends_at_the_message_being_answered() -> None:
    user1 = {"kind": "user", "eventId": "$1", "attempt": "t1"}
    user2 = {"kind": "user", "eventId": "$2", "attempt": "t2"}
    tool1 = {"kind": "tool", "eventId": "$1", "attempt": "t3"}
    answer2, stale2 = {"kind": "assistant", "eventId": "$2", "attempt": "t2"}, {"kind": "assistant", "eventId": "$2",
                                                                              "attempt": "t9"}
    notice = {"kind": "notice", "eventId": "$reaction", "attempt": "notice-1"}
    user3, answer3 = {"kind": "user", "eventId": "$3", "attempt": "t4"}, {"kind": "assistant", "eventId": "$3",
                                                                          "attempt": "t4"}
    records = [user1, user2, tool1, answer2, stale2, notice, user3, answer3]
    # Answering $1: nothing of the later message $2 (nor its answer), its own attempt's tool record, the notice.
    assert context_for(records, "$1", "t3") == [user1, tool1, notice]
    # Answering $2: the earlier message's tool record that landed after it, its own answer, not a stale
    # attempt's answer to it, nothing of $3.
    assert context_for(records, "$2", "t2") == [user1, user2, tool1, answer2, notice]
    # A message folded into a summary is not found: the whole transcript.
    assert context_for(records, "$folded", "t9") == records


async def test_a_stalled_reply_write_lasts_until_its_hold_is_taken_over(tmp_path: Path) -> None:
    # The stall (`stallFirstReplyMs`) is an upper bound: it ends at the takeover, so the second message lands inside
    # it however late it comes, and the stale attempt is stopped right after, not when a fixed stall runs out.
    h = Harness(tmp_path, SessionLifeConfig(stall_first_reply_ms=60_000), LockSettings(max_hold_ms=300))
    first = h.submit("bot: first")
    (stall,) = await h.until("lock.stall")
    assert stall["ms"] == 60_000
    await asyncio.sleep(0.5)  # a late second message: the stall is still on
    assert not h.records("turn.stale")
    second = h.submit("bot: second")
    (takeover,) = await h.until("lock.takeover", reason="max-hold")
    (stale,) = await h.until("turn.stale")  # within WAIT_S (10 s), not after the stall's 60 s
    assert stale["attempt"] == stall["attempt"] and stale["t"] >= takeover["t"]
    await h.until("reply.sent", n=2)
    await h.close()
    assert sorted(h.sent) == ["echo bot: first", "echo bot: second"]
    assert {r["inReplyTo"] for r in h.records("reply.sent")} == {first, second}
