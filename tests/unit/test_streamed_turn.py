"""A whole streamed turn through SessionManager with a fake model and a fake room: the preview is sent and
edited while the session lock file is absent (narrow scope), and present under the lock mutation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from qa.agent.config import AgentConfig
from qa.agent.lock import lock_path_for
from qa.agent.model import ModelReply
from qa.agent.policy import Inbound
from qa.agent.session import SessionManager
from qa.agent.turn_io import TurnIO
from qa.kernel.lock_settings import LockSettings
from qa.kernel.trace import Trace, read_trace


class StreamingModel:
    """Speaks in three deltas; each delta is handed to the preview before the next is 'received'."""

    def __init__(self) -> None:
        self.messages: list[list[dict[str, Any]]] = []

    async def complete(self, messages: list[dict[str, Any]], tools: Any = None, on_text: Any = None,
                       on_retry: Any = None) -> ModelReply:
        self.messages.append(messages)
        text = ""
        for piece in ("Hello", " there", ", friend"):
            text += piece
            if on_text is not None:
                await on_text(text)
            await asyncio.sleep(0.005)  # the model's pace: more than the 1 ms edit interval between deltas
        return ModelReply(text=text)


def config(tmp_path: Path, **extra: Any) -> AgentConfig:
    return AgentConfig.model_validate({
        "homeserver": "http://127.0.0.1:1", "userId": "@bot:hs", "stateDir": str(tmp_path), "rooms": {"!r": {}},
        "model": {"baseUrl": "http://127.0.0.1:1/v1", "model": "m"}, "streaming": "partial",
        "streamEditIntervalMs": 1, **extra})


async def run_turn(tmp_path: Path, cfg: AgentConfig, settings: LockSettings | None = None
                   ) -> tuple[list[tuple[dict[str, Any], bool]], list[dict]]:
    trace = Trace(tmp_path / "trace.jsonl")
    posts: list[tuple[dict[str, Any], bool]] = []
    manager: SessionManager

    async def post(room_id: str, content: dict[str, Any], thread_root: str | None) -> str:
        session = manager.session_for(room_id, None)
        # Is the session's write lock held by anyone at the moment this draft or edit goes out?
        posts.append((content, lock_path_for(session.transcript.path).exists()))
        return f"$p{len(posts)}"

    async def never(*_: Any) -> str | None:
        raise AssertionError("a streamed answer is the preview, not a second message")

    io = TurnIO(cfg, trace, post, lambda _root, _to: None, lambda: ("http://127.0.0.1:1", "token"))
    manager = SessionManager(tmp_path, settings or LockSettings(), trace, StreamingModel(), "sys", never,  # type: ignore[arg-type]
                             turn_io=io)
    manager.submit(Inbound("$q", "!r", "@u:hs", "m.text", "hi", True))
    records: list[dict] = []
    async with asyncio.timeout(10):
        while not any(r["type"] == "turn.end" for r in records):
            await asyncio.sleep(0.01)  # polling a file the bot writes; bounded by the timeout above
            records = read_trace(tmp_path / "trace.jsonl")
    await manager.close()
    trace.close()
    return posts, records


async def test_a_streamed_turn_edits_its_draft_with_no_lock_held(tmp_path: Path) -> None:
    posts, records = await run_turn(tmp_path, config(tmp_path))
    assert posts and not any(held for _, held in posts)
    final = posts[-1][0]
    assert final["m.new_content"]["body"] == "Hello there, friend" and final["m.relates_to"]["event_id"] == "$p1"
    sent = [r for r in records if r["type"] == "reply.sent"]
    assert [(r["eventId"], r["inReplyTo"]) for r in sent] == [("$p1", "$q")]
    assert [r["outcome"] for r in records if r["type"] == "turn.end"] == ["replied"]


@pytest.mark.parametrize("bug", ["lock-while-streaming", "scope-attempt"])
async def test_the_lock_bugs_hold_it_while_the_draft_is_edited(tmp_path: Path, bug: str) -> None:
    if bug == "lock-while-streaming":
        posts, _ = await run_turn(tmp_path, config(tmp_path, testMutations=[bug]))
    else:
        posts, _ = await run_turn(tmp_path, config(tmp_path), LockSettings(scope="attempt"))
    # The draft and every edit while the model speaks go out under the lock; the final edit after its release.
    assert len(posts) >= 3 and all(held for _, held in posts[:-1]) and not posts[-1][1], posts


async def test_a_top_level_turn_reads_no_transcript_for_thread_history(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread's earlier messages are a thread's business: at the top level the turn does not ask for them, so
    it does not read and parse its transcript once more for an answer that is always empty."""
    asked: list[str | None] = []
    original = TurnIO.thread_history

    async def thread_history(self: TurnIO, room_id: str, thread_root: str | None, *args: Any) -> Any:
        asked.append(thread_root)
        return await original(self, room_id, thread_root, *args)

    monkeypatch.setattr(TurnIO, "thread_history", thread_history)
    _, records = await run_turn(tmp_path, config(tmp_path))
    assert [r["outcome"] for r in records if r["type"] == "turn.end"] == ["replied"]
    assert asked == []
