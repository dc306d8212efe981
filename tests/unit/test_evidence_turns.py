"""Small pure judgements of the steps, without servers: how an event is shown (qa.evidence.events), who reached
which membership (qa.evidence.membership), what the trace says about a message (qa.evidence.trace), and whether
the bot's decision proves its silence (qa.evidence.silence)."""

from __future__ import annotations

from typing import Any

import pytest

from qa.evidence.events import describe_event
from qa.evidence.membership import membership_of, settles
from qa.evidence.silence import accepted, control_problems, decision_problems, is_decision
from qa.evidence.trace import attempts_for, describe_bounds, over_bounds, record_matches, series_problems, under_bounds

# --- events --------------------------------------------------------------------------------------------------


def test_describe_event_shows_type_sender_id_body_and_relation() -> None:
    long = "y" * 100
    event = {"type": "m.room.message", "sender": "@b:hs", "event_id": "$e", "content": {
        "body": long, "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                                       "m.in_reply_to": {"event_id": "$ask"}}}}
    assert describe_event(event) == (f"m.room.message from=@b:hs id=$e body={long[:80]!r} "
                                     "relates_to={'rel_type': 'm.thread', 'event_id': '$root'} in_reply_to=$ask")
    assert describe_event({}) == "? from=None id=None"
    assert describe_event({"type": "t", "content": {"body": "secret"}, "decrypted": True}) == \
        "t from=None id=None body=<6 chars, decrypted>"
    assert describe_event({"type": "t", "content": {"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}}) == \
        "t from=None id=None in_reply_to=$a"
    assert describe_event({"type": "t", "content": {"m.relates_to": {"m.in_reply_to": {}}}}) == "t from=None id=None"


# --- membership ----------------------------------------------------------------------------------------------


def member(state: str, who: str = "@bot:hs", room: str = "!r", kind: str = "m.room.member") -> dict[str, Any]:
    return {"type": kind, "state_key": who, "room_id": room, "content": {"membership": state}}


def test_membership_of_is_about_that_user_in_that_room() -> None:
    assert membership_of(member("join"), "@bot:hs", "!r") == "join"
    assert membership_of(member("join", who="@u:hs"), "@bot:hs", "!r") is None
    assert membership_of(member("join", room="!s"), "@bot:hs", "!r") is None
    assert membership_of(member("join", kind="m.room.message"), "@bot:hs", "!r") is None
    assert membership_of({"type": "m.room.member", "state_key": "@bot:hs", "room_id": "!r"}, "@bot:hs", "!r") == "None"


@pytest.mark.parametrize(("state", "wanted", "settled"), [
    ("join", "join", True), ("leave", "join", True), ("invite", "join", False), ("invite", "invite", True),
    ("ban", "leave", True)])
def test_a_wait_for_a_membership_settles_on_any_answer_but_a_pending_invite(state: str, wanted: str,
                                                                            settled: bool) -> None:
    assert settles(member(state), "@bot:hs", "!r", wanted) is settled
    assert not settles(member(state, room="!s"), "@bot:hs", "!r", wanted)


# --- trace ---------------------------------------------------------------------------------------------------


def test_attempts_for_are_the_turns_a_message_started_as_text() -> None:
    records = [{"type": "turn.start", "eventId": "$a", "attempt": 1}, {"type": "turn.start", "eventId": "$b",
                                                                       "attempt": 2},
               {"type": "turn.end", "eventId": "$a", "attempt": 3}, {"type": "turn.start", "eventId": "$a",
                                                                     "attempt": "4"}]
    assert attempts_for(records, "$a") == {"1", "4"}
    assert attempts_for(records, "$c") == set()


def test_record_matches_type_fields_and_the_message_or_its_attempt() -> None:
    record = {"type": "lock.acquire", "eventId": None, "attempt": "7", "kind": "turn"}
    assert record_matches(record, "lock.acquire", {"kind": "turn"}, None, set())
    assert not record_matches(record, "lock.release", {}, None, set())
    assert not record_matches(record, "lock.acquire", {"kind": "post"}, None, set())
    assert record_matches(record, "lock.acquire", {}, "$a", {"7"})
    assert not record_matches(record, "lock.acquire", {}, "$a", {"8"})
    assert record_matches({**record, "eventId": "$a"}, "lock.acquire", {}, "$a", set())


def test_over_bounds_names_fields_over_their_limit_or_not_numbers() -> None:
    record = {"waitMs": 25, "holdMs": 30.5, "name": "x"}
    assert over_bounds(record, {"waitMs": 25, "holdMs": 31}) == {}
    assert over_bounds(record, {"waitMs": 24.9, "name": 1, "gone": 1}) == {"waitMs": 25, "name": "x", "gone": None}
    assert describe_bounds("lock.acquire", {"waitMs": 25.0, "holdMs": 0.5}) == \
        "lock.acquire with waitMs <= 25, holdMs <= 0.5"


def test_under_bounds_names_fields_under_their_floor_or_not_numbers() -> None:
    record = {"retryInS": 0.05, "name": "x"}
    assert under_bounds(record, {"retryInS": 0.05}) == {}  # the floor itself is within
    assert under_bounds(record, {"retryInS": 0.06, "name": 1, "gone": 0}) == \
        {"retryInS": 0.05, "name": "x", "gone": None}
    assert under_bounds(record, {}) == {}
    assert describe_bounds("error", {"retryInS": 5}, {"retryInS": 0.04}) == "error with retryInS >= 0.04, retryInS <= 5"
    assert describe_bounds("error", {}, {"retryInS": 0.04}) == "error with retryInS >= 0.04"


def test_a_retry_at_once_never_shrinks_but_is_under_the_floor() -> None:
    """The sync-retry-at-once agent traces retryInS 0 for every failed sync: `growing` alone passes it, a floor
    does not (matrix-first-sync-fails-repeatedly's min: {retryInS: 0.04})."""
    assert series_problems(_waits(0, 0, 0, 0), 3, {"retryInS": 5}, "retryInS") == []
    assert series_problems(_waits(0, 0, 0, 0), 3, {"retryInS": 5}, "retryInS", {"retryInS": 0.04}) == \
        ["record(s) 1, 2, 3, 4 of 4 under the bounds"]
    assert series_problems(_waits(0.05, 0.1, 0.2), 3, {"retryInS": 5}, "retryInS", {"retryInS": 0.04}) == []
    assert series_problems(_waits(0.05, 0.02, 7), 3, {"retryInS": 5}, None, {"retryInS": 0.04}) == \
        ["record(s) 3 of 3 over the bounds", "record(s) 2 of 3 under the bounds"]


def _waits(*values: Any) -> list[dict[str, Any]]:
    return [{"type": "error", "where": "sync", "retryInS": v} for v in values]


@pytest.mark.parametrize(("records", "at_least", "bounds", "growing", "problems"), [
    (_waits(0.05, 0.1, 0.2, 0.5, 1.0, 1.0), 3, {"retryInS": 5}, "retryInS", []),  # growing, then capped
    (_waits(0.05, 0.1), 3, {}, None, ["2 matching record(s), expected at least 3"]),
    (_waits(0.05, 0.1, 0.1), 3, {}, None, []),
    (_waits(0.05, 6, 0.2, 7), 2, {"retryInS": 5}, None, ["record(s) 2, 4 of 4 over the bounds"]),
    (_waits(0.05, 5), 2, {"retryInS": 5}, None, []),
    (_waits(0.5, 0.2, 0.2, 0.1), 2, {}, "retryInS", ["retryInS shrank: 0.5 then 0.2; 0.2 then 0.1"]),
    (_waits(0.5, "soon"), 2, {}, "retryInS", ["record(s) without a number in retryInS"]),
    (_waits(0, 0, 0), 3, {}, "retryInS", []),  # never shrinking: a constant (even no) wait is not a shrink
    ([], 2, {"retryInS": 5}, "retryInS", ["0 matching record(s), expected at least 2"]),
])
def test_a_series_of_records_is_counted_bounded_and_never_shrinks(
        records: list[dict[str, Any]], at_least: int, bounds: dict[str, float], growing: str | None,
        problems: list[str]) -> None:
    assert series_problems(records, at_least, bounds, growing) == problems


async def test_expect_trace_waits_for_a_series_and_judges_all_of_it() -> None:
    from types import SimpleNamespace

    from qa.scenario.context import StepFailed
    from qa.scenario.steps.trace import ExpectTrace
    from qa.waiting import Stream

    trace: Stream[dict[str, Any]] = Stream(repr)
    for record in [*_waits(0.05), {"type": "error", "where": "send", "retryInS": 9}, *_waits(0.1, 0.2)]:
        await trace.append(record)
    ctx: Any = SimpleNamespace(bot=SimpleNamespace(trace=trace), trace_start=0, refs={}, step_timeout_cap_s=None)
    step = ExpectTrace.model_validate({"type": "error", "match": {"where": "sync"}, "at_least": 3,
                                       "growing": "retryInS", "max": {"retryInS": 5}, "timeout": 1})
    assert await step.run(ctx) == "3 error records: retryInS 0.05, 0.1, 0.2"
    await trace.append(_waits(0.1)[0])  # a shorter wait after a longer one
    with pytest.raises(StepFailed) as failed:
        await step.run(ctx)
    assert "retryInS never shrinking" in failed.value.expected
    assert "retryInS shrank: 0.2 then 0.1" in failed.value.seen
    short = ExpectTrace.model_validate({"type": "error", "match": {"where": "sync"}, "at_least": 9, "timeout": 0.05})
    with pytest.raises(StepFailed) as missing:
        await short.run(ctx)
    assert missing.value.expected == "at least 9 bot trace records error matching {'where': 'sync'}"
    # Without at_least: the first matching record, as before.
    single = ExpectTrace.model_validate({"type": "error", "match": {"where": "sync"}, "max": {"retryInS": 0.01}})
    with pytest.raises(StepFailed) as over:
        await single.run(ctx)
    assert over.value.expected == "error with retryInS <= 0.01"
    floor = ExpectTrace.model_validate({"type": "error", "match": {"where": "sync"}, "min": {"retryInS": 0.06}})
    with pytest.raises(StepFailed) as under:
        await floor.run(ctx)  # the first record waits 0.05 s
    assert under.value.expected == "error with retryInS >= 0.06"
    assert await ExpectTrace.model_validate({"type": "error", "min": {"retryInS": 0.05}}).run(ctx)
    series = ExpectTrace.model_validate({"type": "error", "match": {"where": "sync"}, "at_least": 3,
                                         "min": {"retryInS": 0.1}, "timeout": 1})
    with pytest.raises(StepFailed) as floored:
        await series.run(ctx)
    assert floored.value.expected == "at least 3 bot trace records error, each error with retryInS >= 0.1"
    assert "record(s) 1 of 4 under the bounds" in floored.value.seen


async def test_expect_trace_without_a_series_judges_the_record_that_matched_not_the_traces_first() -> None:
    """The wait re-judges the held records once it wakes: a stateful predicate that said yes to any record once
    enough were counted took the trace's first record (a `start`) for the one found, and its bounds failed on
    the merged tree (matrix-session-lock-contention: "lock.acquire with waitMs <= 25", seen "start …")."""
    from types import SimpleNamespace

    from qa.scenario.steps.trace import ExpectTrace
    from qa.waiting import Stream

    trace: Stream[dict[str, Any]] = Stream(repr)
    await trace.append({"type": "start", "pid": 1})
    await trace.append({"type": "lock.acquire", "purpose": "inbound", "waitMs": 0.1})
    ctx: Any = SimpleNamespace(bot=SimpleNamespace(trace=trace), trace_start=0, refs={}, step_timeout_cap_s=None)
    step = ExpectTrace.model_validate({"type": "lock.acquire", "match": {"purpose": "inbound"},
                                       "max": {"waitMs": 25}, "timeout": 1})
    assert "lock.acquire" in await step.run(ctx)


# --- silence -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("record", "found"), [
    ({"type": "inbound", "eventId": "$a"}, True), ({"type": "reaction", "eventId": "$a"}, True),
    ({"type": "inbound", "eventId": "$b"}, False), ({"type": "turn.start", "eventId": "$a"}, False)])
def test_the_decision_on_an_event_is_its_inbound_or_reaction_record(record: dict[str, Any], found: bool) -> None:
    assert is_decision(record, "$a") is found


def test_decision_problems() -> None:
    for decision in ("dropped", "recorded", "ignored"):
        assert not accepted({"decision": decision})
        assert decision_problems({"decision": decision, "reason": "r"}, "ask", "r") == []
        assert decision_problems({"decision": decision, "reason": "r"}, "ask", None) == []
    assert accepted({"decision": "accepted"}) and accepted({})
    assert decision_problems({"decision": "accepted", "reason": "mentioned"}, "ask", "r") == [
        "the bot accepted 'ask' (mentioned)"]
    assert decision_problems({"decision": "dropped", "reason": "allowlist"}, "ask", "mention-required") == [
        "dropped for 'allowlist', expected 'mention-required'"]


def test_control_problems_compare_the_stripped_body_when_one_is_expected() -> None:
    answer = {"content": {"body": " ok \n"}}
    assert control_problems(answer, None) == [] and control_problems(answer, "ok") == []
    assert control_problems(answer, " ok") == ["control reply body 'ok' != expected ' ok'"]
    assert control_problems({}, "x") == ["control reply body '' != expected 'x'"]


def test_the_settle_window_grows_with_the_slowest_model_answer_and_stops_at_its_cap() -> None:
    from qa.evidence.silence import SETTLE_FACTOR, settle_window_s

    assert SETTLE_FACTOR == 2.0
    assert settle_window_s([], 0.15, 10.0) == 0.15
    assert settle_window_s([None, 0, -5], 0.15, 10.0) == 0.15
    assert settle_window_s([100.0, 1500.0, 20.0], 0.15, 10.0) == pytest.approx(3.15)
    assert settle_window_s([None, 1000], 0.5, 10.0) == pytest.approx(2.5)
    assert settle_window_s([60_000.0], 0.15, 10.0) == 10.0
    assert settle_window_s([4925.0], 0.15, 10.0) == 10.0
    assert settle_window_s([0.5, None], 0.15, 10.0) == pytest.approx(0.151)


def test_the_settle_window_is_at_least_as_long_as_the_slowest_reply_took_to_arrive() -> None:
    from qa.evidence.silence import settle_window_s

    # A bot's reply took 1067 ms to reach the room (a slow homeserver): its edit right after comes that late.
    assert settle_window_s([], 0.15, 10.0, [1067.0]) == pytest.approx(1.067)
    assert settle_window_s([], 0.15, 10.0, [40.0, None, 900.0, 120.0]) == pytest.approx(0.9)  # the slowest
    assert settle_window_s([], 0.15, 10.0, [100.0]) == 0.15  # faster than the usual quiet: the quiet stands
    assert settle_window_s([], 0.15, 10.0, [None, -30.0]) == 0.15
    assert settle_window_s([500.0], 0.15, 10.0, [1000.0]) == pytest.approx(2.0)  # the model's time comes on top
    assert settle_window_s([], 0.15, 10.0, [20_000.0]) == 10.0
    assert settle_window_s([], 0.0, 10.0, [0.5]) == pytest.approx(0.0005)  # a sub-millisecond pace counts as is
