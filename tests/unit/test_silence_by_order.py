"""expect_no_reply judged by order (a bot without a trace): the control's answer is not the end of the watch. A bot
that answers each message in a task of its own may answer the ignored trigger just after the control's answer;
the step watches the room until it falls quiet and fails on that answer, rather than passing and leaving it to a
later step or the scenario's end. No servers: the step runs over a fake room stream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.evidence.silence import watch_after_control_s
from qa.kernel.clock import mono_ms
from qa.scenario.context import Ref, ScenarioContext, StepFailed
from qa.scenario.steps.silence import ExpectNoReply
from qa.waiting import Stream

ROOM, BOT, DRIVER = "!r:hs", "@bot:hs", "@driver:hs"


def _message(event_id: str, body: str, reply_to: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return {"type": "m.room.message", "event_id": event_id, "sender": BOT, "room_id": ROOM, "content": content,
            "_seenMs": mono_ms()}


def _step() -> ExpectNoReply:
    return ExpectNoReply.model_validate({"to": "ignored", "control": {"as": "driver", "body": "hello"}})


def _ctx(step: ExpectNoReply, events: Stream[dict[str, Any]]) -> ScenarioContext:
    driver = SimpleNamespace(user_id=DRIVER, events=events)
    bot = SimpleNamespace(has_trace=False, name="b", trace=Stream(), bot=SimpleNamespace(has=lambda _need: True))
    ctx = ScenarioContext(scenario=SimpleNamespace(steps=[step]), homeserver=None, provider=None,  # type: ignore[arg-type]
                          actors={"driver": driver}, bot=bot, bot_user_id=BOT, bot_name="bot",  # type: ignore[arg-type]
                          rooms={"main": ROOM}, markers=None, artifact_dir=Path("."))
    ctx.refs["ignored"] = Ref(ROOM, "$trigger", None, mono_ms(), actor="driver", body="ignored", text="ignored")
    return ctx


def _answers_control(monkeypatch: pytest.MonkeyPatch, events: Stream[dict[str, Any]], then: dict[str, Any] | None,
                     after_s: float = 0.01, turnaround_ms: float = 0.0) -> list[Any]:
    """The control is answered `turnaround_ms` after it was sent; `then` (if any) lands `after_s` after that
    answer, as a concurrent bot's answer to the trigger would. Timers on the step's own loop: their order holds
    however loaded the machine."""
    tasks: list[Any] = []

    async def late() -> None:
        await asyncio.sleep(after_s)
        await events.append(then)  # type: ignore[arg-type]

    async def control(self: Any, ctx: Any, control: Any, trigger: Any, check: Any, typed: str) -> Any:
        answer = _message("$control-answer", "hi", reply_to="$control")
        await events.append(answer)
        check.controlReplyEventId = "$control-answer"
        if then is not None:
            tasks.append(asyncio.ensure_future(late()))
        return {**answer, "_controlSentMs": answer["_seenMs"] - turnaround_ms}, []

    monkeypatch.setattr(ExpectNoReply, "_control", control)
    monkeypatch.setattr("qa.scenario.steps.silence.prompt", lambda _ctx, body: body)
    return tasks


async def test_an_answer_to_the_trigger_just_after_the_controls_fails_the_step(monkeypatch) -> None:
    events: Stream[dict[str, Any]] = Stream()
    step = _step()
    ctx = _ctx(step, events)
    _answers_control(monkeypatch, events, _message("$late", "answer to the ignored one", reply_to="$trigger"))
    with pytest.raises(StepFailed) as failed:
        await step.run(ctx)
    assert failed.value.seen[0].startswith("the bot answered 'ignored': $late"), failed.value.seen
    assert ctx.negative_checks[0].unwantedReplies == ["$late"]


async def test_the_watch_lasts_as_long_as_the_bots_turnaround_says_an_answer_could_come(monkeypatch) -> None:
    """The control took 1 s: an answer to the trigger 0.4 s after the control's (longer than the room's quiet
    window, 0.15 s with no model) still fails the step, and ends the watch at once."""
    events: Stream[dict[str, Any]] = Stream()
    step = _step()
    ctx = _ctx(step, events)
    late = _message("$late", "answer to the ignored one", reply_to="$trigger")
    _answers_control(monkeypatch, events, late, after_s=0.4, turnaround_ms=1000.0)
    with pytest.raises(StepFailed) as failed:
        await step.run(ctx)
    assert failed.value.seen[0].startswith("the bot answered 'ignored': $late"), failed.value.seen


async def test_a_quiet_room_after_the_controls_answer_passes_and_says_what_was_watched(monkeypatch) -> None:
    events: Stream[dict[str, Any]] = Stream()
    step = _step()
    ctx = _ctx(step, events)
    _answers_control(monkeypatch, events, None)
    said = await step.run(ctx)
    assert said.startswith("no bot message for 'ignored' before the control's answer $control-answer, nor in the"), said
    assert said.endswith("s watched after it (order; judged again when the scenario ends)"), said
    # Judged again when the scenario ends: an answer after the watch (after a later step) still fails it.
    assert ctx.final_checks[0]() is None
    await events.append(_message("$later", "late", reply_to="$trigger"))
    assert ctx.final_checks[0]() == "the bot answered 'ignored' after its check had passed: $later"
    # And looked at after the exit: a bare thread message after a follow-up there may answer it (test_thread_unsure).
    assert len(ctx.after_exit_notes) == 1 and ctx.after_exit_notes[0](0) is None


def test_the_watch_lasts_twice_the_controls_turnaround_counted_from_the_trigger() -> None:
    # Trigger at 0, control sent at 100, answered at 600 (turnaround 500): a concurrent bot as slow on the trigger
    # answers it by 2 x 500 from the trigger, 400 ms after the control's answer.
    assert watch_after_control_s(0.0, 100.0, 600.0, cap_s=60.0) == pytest.approx(0.4)
    assert watch_after_control_s(0.0, 100.0, 600.0, cap_s=0.25) == 0.25  # never longer than the step may wait
    # A control sent long after the trigger: that time has already been watched.
    assert watch_after_control_s(0.0, 5000.0, 5100.0, cap_s=60.0) == 0.0
    # A clock that seems to step back is no turnaround.
    assert watch_after_control_s(0.0, 100.0, 50.0, cap_s=60.0) == 0.0
    assert watch_after_control_s(1000.0, 1000.0, 1300.0, cap_s=60.0) == pytest.approx(0.3)
    # An answer seen the instant the control was sent: no turnaround, nothing left to watch.
    assert watch_after_control_s(1000.0, 1000.0, 1000.0, cap_s=60.0) == 0.0


async def test_a_traced_check_registers_its_trigger_so_the_unnamed_sends_are_shared(monkeypatch) -> None:
    """The final checks count the sends traced without an event id against every traced check's untraced answers
    (test_untraced_silence): each traced expect_no_reply registers its trigger in ctx.silenced; one without a trace
    does not (its silence is judged by order)."""
    events: Stream[dict[str, Any]] = Stream()
    step = _step()
    ctx = _ctx(step, events)
    ctx.bot.has_trace = True
    await ctx.bot.trace.append({"type": "inbound", "eventId": "$trigger", "decision": "dropped", "reason": "r"})
    _answers_control(monkeypatch, events, None)
    assert (await step.run(ctx)).startswith("dropped (r)")
    assert ctx.silenced == [(ctx.refs["ignored"], "ignored")]
    assert len(ctx.final_checks) == len(ctx.after_exit_notes) == 1
    untraced = _ctx(step, Stream())
    _answers_control(monkeypatch, untraced.actors["driver"].events, None)  # type: ignore[attr-defined]
    await step.run(untraced)
    assert untraced.silenced == []
