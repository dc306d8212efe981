"""A bot's thread message that names no event it replies to, sent after a test user wrote in that thread, may
answer the root or the later message (qa.evidence.pairing.unnamed_in_threads). For a bot without a trace nothing
tells which: expect_reply_count on the root and the after-exit look of expect_no_reply on it say NOT CHECKED,
naming it, rather than leaving it out silently; a count wrong either way still fails. No servers: fake streams."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.report.summary import NegativeCheck
from qa.scenario.context import Ref, ScenarioContext, StepFailed
from qa.scenario.steps.replies import ExpectReplyCount
from qa.scenario.steps.silence import _thread_unsure_after
from qa.waiting import Stream

ROOM, BOT, DRIVER = "!r:hs", "@bot:hs", "@driver:hs"


def _in_thread(event_id: str, sender: str = BOT, root: str = "$root") -> dict[str, Any]:
    return {"type": "m.room.message", "event_id": event_id, "sender": sender, "room_id": ROOM,
            "content": {"msgtype": "m.text", "body": "answer", "m.relates_to": {"rel_type": "m.thread",
                                                                                "event_id": root}}}


def _ctx(events: list[dict[str, Any]], has_trace: bool = False) -> ScenarioContext:
    driver = SimpleNamespace(user_id=DRIVER, events=SimpleNamespace(items=events))
    bot = SimpleNamespace(has_trace=has_trace, name="b", trace=Stream(), bot=SimpleNamespace(has=lambda _need: True),
                          log_path="bot.log", log_tail=lambda _n: [], died=SimpleNamespace(is_set=lambda: False),
                          log=Stream())
    ctx = ScenarioContext(scenario=SimpleNamespace(steps=[]), homeserver=None, provider=None,  # type: ignore[arg-type]
                          actors={"driver": driver}, bot=bot, bot_user_id=BOT, bot_name="bot",  # type: ignore[arg-type]
                          rooms={"main": ROOM}, markers=None, artifact_dir=Path("."))
    ctx.refs["root"] = Ref(ROOM, "$root", None, 0.0, actor="driver", body="root", text="root")
    ctx.refs["follow"] = Ref(ROOM, "$follow", "$root", 0.0, actor="driver", body="more", text="more")
    return ctx


ROOT = {"type": "m.room.message", "event_id": "$root", "sender": DRIVER, "room_id": ROOM,
        "content": {"msgtype": "m.text", "body": "root"}}
EVENTS = [ROOT, _in_thread("$first"), _in_thread("$follow", sender=DRIVER), _in_thread("$then")]


async def _count(ctx: ScenarioContext, count: int) -> str:
    return await ExpectReplyCount.model_validate({"to": "root", "count": count}).run(ctx)


async def test_a_count_that_such_a_message_may_make_right_or_wrong_is_not_checked_and_names_it() -> None:
    unsure = ("NOT CHECKED: the bot sent 1 message(s) in the thread of 'root' after someone else wrote there that "
              "name no event they answer ($then): whether one answers 'root' cannot be told without a trace")
    assert await _count(_ctx(EVENTS), 1) == f"1 reply to $root; {unsure}"
    assert await _count(_ctx(EVENTS), 2) == f"1 reply to $root; {unsure}"
    for wrong in (0, 3):  # wrong whether it answers the root or not
        with pytest.raises(StepFailed) as failed:
            await _count(_ctx(EVENTS), wrong)
        assert failed.value.seen[:2] == ["1 replies: $first", unsure.removeprefix("NOT CHECKED: ")]
    # Without such a message, or with it settled (paired with the follow-up; a trace), the count is plain.
    assert await _count(_ctx(EVENTS[:3]), 1) == "1 reply to $root"
    paired = _ctx(EVENTS)
    paired.claimed["$then"] = "$follow"
    assert await _count(paired, 1) == "1 reply to $root"
    with pytest.raises(StepFailed):
        await _count(paired, 2)
    assert await _count(_ctx(EVENTS, has_trace=True), 1) == "1 reply to $root"  # the trace would name it


def test_the_silence_about_the_root_is_not_checked_after_the_exit_naming_it() -> None:
    check = NegativeCheck(step=2, triggerEventId="$root", expectedReason="")
    ctx = _ctx(EVENTS)
    assert _thread_unsure_after(ctx, ctx.refs["root"], "root", check)(0) == (
        "the bot sent 1 message(s) in the thread of 'root' after someone else wrote there that name no event they "
        "answer ($then): whether one answers 'root' cannot be told without a trace")
    check.unwantedReplies.append("$then")  # already failed on: not said again
    assert _thread_unsure_after(ctx, ctx.refs["root"], "root", check)(0) is None
    # Another thread's messages are not the root's.
    other = [*EVENTS, _in_thread("$ask", sender=DRIVER, root="$else"), _in_thread("$there", root="$else")]
    fresh = NegativeCheck(step=2, triggerEventId="$root", expectedReason="")
    assert "($then)" in (_thread_unsure_after(_ctx(other), ctx.refs["root"], "root", fresh)(0) or "")
