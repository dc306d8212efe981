"""Before the final checks, a traced bot's sends must have reached the test users' clients: which events the
trace says the bot sent (qa.evidence.traced_sends, pure) and the bounded wait for them (qa.scenario.settling),
without servers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from qa.evidence.trace import TracedSends, traced_sends
from qa.scenario import settling
from qa.waiting import Stream


def start(request: Any = "r1", **fields: Any) -> dict[str, Any]:
    return {"type": "preview.edit.start", "requestId": request, "kind": "edit", **fields}


def end(request: Any = "r1", event_id: Any = "$edit", ok: Any = True) -> dict[str, Any]:
    return {"type": "preview.edit.end", "requestId": request, "eventId": event_id, "ok": ok}


# --- which sends the trace names -----------------------------------------------------------------------------


def test_replies_parts_and_ended_edits_are_named_once_in_trace_order() -> None:
    records = [{"type": "reply.sent", "eventId": "$a", "inReplyTo": "$t"}, start("r1"), end("r1", "$b"),
               {"type": "reply.parts", "parts": ["$a", "$c", 7, ""]}, {"type": "turn.end", "eventId": "$t"},
               {"type": "reply.sent", "eventId": "$b"}]
    assert traced_sends(records) == TracedSends(("$a", "$b", "$c"), (), 0)


def test_an_edit_started_and_not_ended_is_in_flight_until_its_end() -> None:
    assert traced_sends([start("r1"), start("r2"), end("r1", "$x")]) == TracedSends(("$x",), ("r2",), 0)
    assert traced_sends([start("r1"), end("r2", "$x")]).in_flight == ("r1",)


def test_a_send_the_bot_began_before_it_restarted_is_not_in_flight() -> None:
    # Killed mid-edit and started again: the new process never ends the old one's send.
    for again in ({"type": "start", "pid": 2}, {"type": "ready"}):
        assert traced_sends([start("r1"), again, start("r2")]) == TracedSends((), ("r2",), 0)
    assert traced_sends([{"type": "reply.sent", "eventId": "$a"}, {"type": "ready"}]).ids == ("$a",)
    # A bot that never traces `start`: each `ready` is a new process, the second as much as the first.
    ready = {"type": "ready"}
    assert traced_sends([ready, start("r1"), ready, start("r2")]).in_flight == ("r2",)


def test_a_second_ready_of_a_bot_that_traces_start_keeps_its_edit_in_flight() -> None:
    # The format does not make `ready` once per process: a bot may trace it again after a reconnect, mid-edit.
    ready = {"type": "ready"}
    assert traced_sends([{"type": "start", "pid": 1}, ready, start("r1"), ready]).in_flight == ("r1",)
    # A restart (a new `start`) still ends it, and its own `ready` after that ends nothing new.
    assert traced_sends([{"type": "start", "pid": 1}, start("r1"), {"type": "start", "pid": 2}, ready,
                         start("r2"), ready]).in_flight == ("r2",)


def test_a_failed_send_names_nothing_and_a_send_without_an_id_is_unnamed() -> None:
    assert traced_sends([start("r1"), end("r1", None, ok=False)]) == TracedSends((), (), 0)
    assert traced_sends([end("r1", "$x", ok=False)]) == TracedSends((), (), 0)
    assert traced_sends([end("r1", None)]) == TracedSends((), (), 1)
    assert traced_sends([end("r1", "")]).unnamed == 1
    assert traced_sends([{"type": "reply.sent"}, {"type": "reply.sent", "eventId": 5}]) == TracedSends((), (), 2)
    assert traced_sends([start(None)]) == TracedSends((), (), 1)  # no requestId: no end can be told apart


def test_every_record_is_read_whatever_came_before_it() -> None:
    # After a failed send, a split reply, or a record that names no send, the rest of the trace still counts.
    records = [start("r1"), end("r1", None, ok=False), {"type": "reply.sent", "eventId": "$a"},
               {"type": "reply.parts", "parts": ["$b"]}, {"type": "reply.sent", "eventId": "$c"},
               {"type": "turn.end"}, {"type": "reply.sent", "eventId": "$d"}]
    assert traced_sends(records) == TracedSends(("$a", "$b", "$c", "$d"), (), 0)
    assert traced_sends([start(None), start(7), {"type": "reply.sent"}]).unnamed == 3


def test_hostile_parts_and_other_records_name_nothing() -> None:
    records = [{"type": "reply.parts", "parts": "$abc"}, {"type": "reply.parts"},
               {"type": "turn.start", "eventId": "$t"}, {"type": "inbound", "eventId": "$t"}, {"eventId": "$u"}]
    assert traced_sends(records) == TracedSends((), (), 0)


# --- the wait ------------------------------------------------------------------------------------------------


def ctx_with(trace: list[dict[str, Any]], *clients: list[dict[str, Any]]) -> Any:
    async def make() -> Any:
        bot_trace: Stream[dict[str, Any]] = Stream()
        await bot_trace.extend(trace)
        actors = {}
        for i, events in enumerate(clients):
            stream: Stream[dict[str, Any]] = Stream()
            await stream.extend(events)
            actors[f"a{i}"] = SimpleNamespace(events=stream)
        return SimpleNamespace(bot=SimpleNamespace(trace=bot_trace), trace_start=0, actors=actors)
    return make()


async def test_the_wait_ends_when_a_client_receives_the_last_traced_send() -> None:
    # The embedded agent's case: it got the edit's id back, traced it and ended its turn before the test
    # user's sync brought the edit.
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}, start(), end("r1", "$edit")],
                         [{"event_id": "$a"}], [])
    waiting = asyncio.ensure_future(settling._traced_sends_received(ctx, 30.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await ctx.actors["a1"].events.append({"event_id": "$edit"})  # any test user's client will do
    assert await asyncio.wait_for(waiting, 5) is None


async def test_an_edit_in_flight_is_waited_for_then_its_event() -> None:
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}, start()], [{"event_id": "$a"}])
    waiting = asyncio.ensure_future(settling._traced_sends_received(ctx, 30.0))
    await asyncio.sleep(0.05)
    await ctx.bot.trace.append(end("r1", "$edit"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await ctx.actors["a0"].events.append({"event_id": "$edit"})
    assert await asyncio.wait_for(waiting, 5) is None


async def test_a_send_never_received_is_said_when_the_wait_ends() -> None:
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}, {"type": "reply.sent", "eventId": "$b"}],
                         [{"event_id": "$a"}])
    missing = await settling._traced_sends_received(ctx, 0.2)
    assert missing == "1 event(s) the bot's trace says it sent never reached a test user's client within 0.2s: $b"


async def test_a_send_that_never_ends_is_said_when_the_wait_ends() -> None:
    ctx = await ctx_with([start("r1"), start("r2"), end("r2", "$x")], [{"event_id": "$x"}])
    missing = await settling._traced_sends_received(ctx, 0.2)
    assert missing == "the bot's trace still shows 1 send(s) in flight (preview.edit.start without its end) after 0.2s"


async def test_nothing_to_wait_for_ends_at_once() -> None:
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}], [{"event_id": "$a"}])
    assert await asyncio.wait_for(settling._traced_sends_received(ctx, 30.0), 5) is None
    lonely = await ctx_with([{"type": "reply.sent", "eventId": "$a"}])
    assert await asyncio.wait_for(settling._traced_sends_received(lonely, 30.0), 5) is None


async def test_a_closed_client_stream_does_not_end_the_wait_for_the_others() -> None:
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}], [], [])
    await ctx.actors["a0"].events.close("client stopped")
    waiting = asyncio.ensure_future(settling._traced_sends_received(ctx, 30.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await ctx.actors["a1"].events.append({"event_id": "$a"})
    assert await asyncio.wait_for(waiting, 5) is None


# --- which wait the final checks get -------------------------------------------------------------------------


async def _late_evidence(monkeypatch: Any, ctx: Any, idle: bool) -> tuple[str | None, list[str]]:
    settled: list[str] = []

    async def says_idle(_ctx: Any) -> bool:
        return idle

    async def settles(_ctx: Any) -> None:
        settled.append("quiet window")

    monkeypatch.setattr(settling, "bot_says_it_is_idle", says_idle)
    monkeypatch.setattr(settling, "room_settles", settles)
    ctx.provider, ctx.reply_latencies_ms = None, []
    return await settling.late_evidence_in(ctx), settled


async def test_a_bot_whose_turns_have_not_ended_gets_the_quiet_window(monkeypatch: Any) -> None:
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}])  # never received: not waited for here
    assert await _late_evidence(monkeypatch, ctx, idle=False) == (None, ["quiet window"])


async def test_an_idle_bot_is_waited_on_by_its_event_ids_alone(monkeypatch: Any) -> None:
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}], [{"event_id": "$a"}])
    assert await _late_evidence(monkeypatch, ctx, idle=True) == (None, [])


async def test_a_send_traced_without_its_id_adds_the_quiet_window(monkeypatch: Any) -> None:
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$a"}, end("r1", None)], [{"event_id": "$a"}])
    assert await _late_evidence(monkeypatch, ctx, idle=True) == (None, ["quiet window"])


async def test_what_never_arrived_is_said_for_the_result(monkeypatch: Any) -> None:
    monkeypatch.setattr(settling, "FINAL_MAX_S", 0.2)
    ctx = await ctx_with([{"type": "reply.sent", "eventId": "$gone"}, end("r1", None)], [])
    missing, settled = await _late_evidence(monkeypatch, ctx, idle=True)
    assert missing is not None and missing.endswith("within 0.3s: $gone") and settled == [], missing


def _arrival_trace(quick_at: str) -> list[dict]:
    """The slow turn's model call, and the quick message's turn start placed `before`, `during` or `after` it."""
    slow = [{"type": "turn.start", "eventId": "$slow", "attempt": "a1"},
            {"type": "model.request.start", "attempt": "a1"},
            {"type": "model.request.end", "attempt": "a1"}]
    quick = {"type": "turn.start", "eventId": "$quick", "attempt": "a2"}
    at = {"before": 1, "during": 2, "after": 3}[quick_at]
    return [*slow[:at], quick, *slow[at:]]


def _arrival(records: list[dict], event_id: str = "$quick", other_id: str = "$slow") -> str | None:
    """Why `event_id` did not reach the bot mid `other_id`'s model call (None when it did), judged on a bounded
    record the trace does not hold (so only the arrival decides)."""
    from qa.evidence.trace import contention_during

    verdict = contention_during(records, event_id, other_id, {"type": "lock.acquire"}, 0)
    assert (verdict.verdict == "counts") == (verdict.why == ""), verdict
    assert verdict.verdict in ("counts", "no-contention"), verdict
    return verdict.why or None


def test_a_contention_bound_counts_only_for_a_message_that_came_mid_model_call() -> None:
    assert _arrival(_arrival_trace("during")) is None
    assert _arrival(_arrival_trace("after")) == \
        "reached the bot only after the other message's model request had ended"
    assert _arrival(_arrival_trace("before")) == \
        "reached the bot before the other message's model request started"
    # Still in flight (no end traced yet): it came mid call.
    assert _arrival(_arrival_trace("during")[:-1]) is None
    assert _arrival(_arrival_trace("during")[:2]) == "left no trace record about it"
    # Its first record is what counts, whether it names the event alone or only its turn's attempt (lock records).
    late = _arrival_trace("after")
    for first in ({"type": "message.received", "eventId": "$quick"}, {"type": "lock.acquire", "attempt": "a2"}):
        assert _arrival([*late[:2], first, *late[2:]]) is None, first
    # The slow turn's records name its attempt, not its event: found through its turn.start all the same.
    assert "before" in (_arrival(_arrival_trace("during"), other_id="$other") or "")  # no model request of $other


def _queued_trace(acquire_at: str, gap_ms: float) -> tuple[list[dict], dict]:
    """$quick reaches the bot mid $slow's model call (t 100); its lock.acquire comes `gap_ms` later, `before` or
    `after` $slow's model.request.end."""
    quick = {"type": "turn.start", "eventId": "$quick", "attempt": "a2", "t": 100.0}
    acquire = {"type": "lock.acquire", "attempt": "a2", "purpose": "inbound", "waitMs": 0, "t": 100.0 + gap_ms}
    slow = [{"type": "turn.start", "eventId": "$slow", "attempt": "a1", "t": 0.0},
            {"type": "model.request.start", "attempt": "a1", "t": 10.0}]
    end = {"type": "model.request.end", "attempt": "a1", "t": 100.0 + gap_ms / 2}
    return ([*slow, quick, acquire, end] if acquire_at == "before" else [*slow, quick, end, acquire]), acquire


def _queued(records: list[dict], event_id: str, other_id: str, record: dict,
                  slack_ms: float) -> tuple[bool, str] | None:
    """contention_during for a message that came mid call, in the shape these cases were written in: None when the
    bounds stand, (True, why) when it waited for the other turn, (False, why) when that cannot be told."""
    from qa.evidence.trace import contention_during

    verdict = contention_during(records, event_id, other_id, record, slack_ms)
    # The step knows these three by name (no-contention is for a message that did not come mid call): any other
    # word would fall through it to a plain pass.
    assert verdict.verdict in ("counts", "waited", "unsure"), verdict
    return None if verdict.verdict == "counts" else (verdict.verdict == "waited", verdict.why)


def test_a_bounded_record_that_came_only_after_the_other_turn_waited_for_it() -> None:

    # Taken mid call: in time, whatever its gap.
    records, acquire = _queued_trace("before", 900)
    assert _queued(records, "$quick", "$slow", acquire, 250) is None
    # A bot that queues the message behind the running turn, then takes a free lock (waitMs 0): it waited.
    records, acquire = _queued_trace("after", 900)
    failed, why = _queued(records, "$quick", "$slow", acquire, 250) or (None, "")
    assert failed is True and "900 ms after it reached the bot" in why and "waited for the other turn" in why
    # Within the slack of the request's end: a moment's delay cannot be told from a queue.
    records, acquire = _queued_trace("after", 250)
    assert _queued(records, "$quick", "$slow", acquire, 250) == (
        False, "came after the other message's model request ended, 250 ms after it reached the bot: too close to "
               "the request's end to tell")
    # No times to measure by: never a fail.
    untimed = [{k: v for k, v in r.items() if k != "t"} for r in records]
    assert _queued(untimed, "$quick", "$slow", untimed[4], 250)[0] is False  # type: ignore[index]
    # The other request still in flight: nothing to say.
    records, acquire = _queued_trace("after", 900)
    assert _queued([r for r in records if r["type"] != "model.request.end"], "$quick", "$slow", acquire, 250) \
        is None


def test_the_wait_behind_the_other_turn_counts_from_the_messages_first_record() -> None:

    records, acquire = _queued_trace("after", 900)  # turn.start at t 100, acquire at t 1000
    # The bot's first word about it names the event only (an inbound record), 50 ms before its turn started.
    inbound = {"type": "inbound", "eventId": "$quick", "t": 50.0}
    failed, why = _queued([*records[:2], inbound, *records[2:]], "$quick", "$slow", acquire, 250) or (None, "")
    assert failed is True and "950 ms after it reached the bot" in why, why
    # Or names its turn's attempt only (a lock record), 30 ms before the turn.start naming both.
    early = {"type": "lock.acquire", "attempt": "a2", "purpose": "probe", "t": 70.0}
    failed, why = _queued([*records[:2], early, *records[2:]], "$quick", "$slow", acquire, 250) or (None, "")
    assert failed is True and "930 ms after it reached the bot" in why, why
    # Without times: said so, never failed.
    untimed = [{k: v for k, v in r.items() if k != "t"} for r in records]
    assert _queued(untimed, "$quick", "$slow", untimed[4], 250) == (
        False, "came after the other message's model request ended, and the trace has no times to tell how long")


def test_a_message_that_did_not_come_mid_call_is_never_judged_as_queued() -> None:
    from qa.evidence.trace import Contention, contention_during

    # It reached the bot after the other request ended, its acquire long after: no contention, not a queue.
    records = [*_arrival_trace("after"), {"type": "lock.acquire", "attempt": "a2", "waitMs": 0}]
    for slack in (0, 10_000):
        assert contention_during(records, "$quick", "$slow", records[-1], slack) == Contention(
            "no-contention", "reached the bot only after the other message's model request had ended")


def test_the_slack_is_the_largest_millisecond_bound() -> None:
    from qa.evidence.trace import contention_slack_ms

    assert contention_slack_ms({"waitMs": 250, "heldMs": 900, "count": 5000, "retryInS": 3}) == 900
    assert contention_slack_ms({"count": 5000, "Ms": 40}) == 40
    assert contention_slack_ms({"count": 5000, "timeMS": 7}) == 0  # a unit the trace format does not use
    assert contention_slack_ms({}) == 0
