"""The final checks once more on the room as the bot left it: whether the fences make the observer's view whole
and how a changed verdict is told (qa.evidence.fence, pure), and the look itself (qa.scenario.fence) on fake
clients, without servers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from qa.evidence.events import BotIdentity
from qa.evidence.fence import (
    FENCE_TYPE,
    fence_shortfall,
    late_bot_events,
    late_verdict,
    not_checked,
    redacted_id,
    redaction_problems,
    rooms_joined,
    unreadable,
)
from qa.kernel.errors import InfraError
from qa.scenario import fence
from qa.waiting import Stream

BOT = "@bot:hs"
IDS = BotIdentity(frozenset({BOT}))


def event(event_id: str, sender: str = BOT, kind: str = "m.room.message", **content: Any) -> dict[str, Any]:
    return {"event_id": event_id, "sender": sender, "type": kind, "room_id": "!r", "content": content}


# --- qa.evidence.fence ----------------------------------------------------------------------------------------


def test_the_view_is_whole_once_every_fence_is_received_and_no_fenced_room_was_cut() -> None:
    fences = {"!a": "$fa", "!b": "$fb"}
    assert fence_shortfall(fences, [event("$x"), event("$fa"), event("$fb")], []) == []
    assert fence_shortfall(fences, [event("$fb")], []) == ["the fence $fa in !a did not reach the observer in time"]
    assert fence_shortfall(fences, [], []) == ["the fence $fa in !a did not reach the observer in time",
                                               "the fence $fb in !b did not reach the observer in time"]


def test_a_cut_timeline_leaves_a_hole_only_in_a_fenced_room() -> None:
    fences = {"!a": "$fa"}
    seen = [event("$fa")]
    assert fence_shortfall(fences, seen, ["!a", "!a"]) == ["a sync of the observer skipped part of !a's timeline "
                                                          "(limited)"]
    assert fence_shortfall(fences, seen, ["!other"]) == []
    assert fence_shortfall({"!b": "$fb", "!a": "$fa"}, [event("$fa"), event("$fb")], ["!b", "!a"]) == [
        "a sync of the observer skipped part of !a's timeline (limited)",
        "a sync of the observer skipped part of !b's timeline (limited)"]


def member(room: str, membership: str, user: str = "@driver:hs") -> dict[str, Any]:
    return {"type": "m.room.member", "state_key": user, "room_id": room, "content": {"membership": membership}}


def test_the_rooms_to_fence_are_those_the_observer_is_in_by_its_latest_membership() -> None:
    events = [member("!a", "join"), member("!b", "join"), member("!b", "leave"), member("!c", "invite"),
              member("!d", "join", user="@alice:hs"), member("!e", "leave"), member("!e", "join")]
    rooms = ["!a", "!b", "!c", "!d", "!a", "!e", "!f"]
    assert rooms_joined(events, "@driver:hs", rooms, []) == ["!a", "!e"]
    # A room with no membership of its own in view: what the client says it is in decides.
    assert rooms_joined(events, "@driver:hs", rooms, ["!d", "!f", "!b"]) == ["!a", "!d", "!e", "!f"]
    # Left by a step: its leave never showed in the stream, whose latest says join.
    assert rooms_joined(events, "@driver:hs", rooms, ["!d", "!f"], ["!a", "!f"]) == ["!d", "!e"]


def test_late_events_are_the_bots_from_the_mark_on() -> None:
    events = [event("$1"), event("$2", sender="@driver:hs"), event("$3"), event("$4", sender="@driver:hs"),
              event("$5")]
    assert [e["event_id"] for e in late_bot_events(events, 2, IDS)] == ["$3", "$5"]
    assert [e["event_id"] for e in late_bot_events(events, 0, BOT)] == ["$1", "$3", "$5"]
    assert late_bot_events(events, 5, IDS) == []


def test_an_event_the_client_could_not_decrypt_is_named() -> None:
    events = [event("$a"), event("$b", kind="m.room.encrypted"), event("$c", kind="m.reaction")]
    assert unreadable(events) == ["$b"]


def test_what_the_result_says_when_the_view_is_not_whole() -> None:
    assert not_checked([], []) is None
    assert not_checked(["fence missing"], []) == "fence missing"
    assert not_checked(["a", "b"], []) == "a; b"
    assert not_checked([], ["$x", "$y"]) == \
        "2 bot event(s) received after the bot exited could not be decrypted: $x, $y"
    six = [f"${n}" for n in range(6)]
    assert not_checked(["a"], six) == "a; 6 bot event(s) received after the bot exited could not be decrypted: " \
        "$0, $1, $2, $3, $4"


def test_a_changed_verdict_names_the_first_problem_and_every_late_event() -> None:
    late = [event("$edit", body="* wrong")]
    details, seen = late_verdict(["the bot later edited its reply $r"], late)
    assert details == "after the bot exited: the bot later edited its reply $r"
    assert seen == ["the bot later edited its reply $r", "late: m.room.message from=@bot:hs id=$edit body='* wrong'"]
    details, seen = late_verdict(["one", "two", "three"], [])
    assert details == "after the bot exited: one (and 2 more)"
    assert seen == ["one", "two", "three"]
    assert late_verdict(["one", "two"], [])[0] == "after the bot exited: one (and 1 more)"


# --- qa.scenario.fence on fake clients -------------------------------------------------------------------------


class FakeObserver:
    """A test user's client: a send puts its event into the stream after `delay_s` (None: never), as a sync would."""

    def __init__(self, rooms: list[str], delay_s: float | None = 0.0, refuse: bool = False) -> None:
        self.events: Stream[dict[str, Any]] = Stream()
        self.user_id = "@driver:hs"
        self.client = SimpleNamespace(rooms={room: object() for room in rooms})
        self.left_rooms: set[str] = set()
        self.cut_later: list[str] = []
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.delay_s = delay_s
        self.refuse = refuse
        self.before_fence: list[dict[str, Any]] = []  # what the homeserver persisted before the fence

    async def send_unencrypted(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        if self.refuse:
            raise InfraError(f"driver could not send to {room_id}: forbidden")
        event_id = f"$fence{len(self.sent)}"
        self.sent.append((room_id, event_type, content))
        if self.delay_s is not None:
            batch = [*self.before_fence, {"event_id": event_id, "room_id": room_id, "type": event_type}]
            self.before_fence = []
            asyncio.get_running_loop().call_later(self.delay_s,
                                                  lambda: asyncio.ensure_future(self.events.extend(batch)))
        return event_id


def ctx_of(observer: FakeObserver, checks: list[Any], rooms: dict[str, str] | None = None,
           returncode: int | None = 0, notes: list[Any] | None = None) -> Any:
    return SimpleNamespace(observer=lambda: observer, rooms=rooms or {"main": "!a"}, final_checks=checks,
                           bot_ids=IDS, bot=SimpleNamespace(proc=SimpleNamespace(returncode=returncode)),
                           after_exit_notes=notes or [])


def still_says(observer: FakeObserver, reply: str, expected: str) -> Any:
    def check() -> str | None:
        edits = [e for e in observer.events.items if (e.get("content") or {}).get("m.relates_to", {}).get("event_id")
                 == reply]
        now = edits[-1]["content"]["m.new_content"]["body"] if edits else expected
        return None if now == expected else f"the bot later edited its reply {reply} into {now!r}"
    return check


async def test_an_edit_persisted_before_the_fence_fails_the_scenario_naming_it() -> None:
    observer = FakeObserver(["!a"], delay_s=0.01)
    observer.before_fence = [event("$late", **{"m.new_content": {"body": "wrong"},
                                               "m.relates_to": {"rel_type": "m.replace", "event_id": "$r"}})]
    with pytest.raises(fence.LateFailure) as failed:
        await fence.judge_after_exit(ctx_of(observer, [still_says(observer, "$r", "right")]), 0)
    assert failed.value.details == "after the bot exited: the bot later edited its reply $r into 'wrong'"
    assert failed.value.seen[-1].startswith("late: m.room.message from=@bot:hs id=$late")
    # The type docs/trace-format.md names, so a bot's author can tell it from anything a person sends.
    assert FENCE_TYPE == "org.matrix_qa.fence"
    assert observer.sent == [("!a", "org.matrix_qa.fence", observer.sent[0][2])] and observer.sent[0][2]["nonce"]


async def test_a_whole_view_that_still_holds_says_nothing() -> None:
    observer = FakeObserver(["!a", "!b"])
    ctx = ctx_of(observer, [lambda: None], rooms={"main": "!a", "side": "!b", "again": "!a", "away": "!c"})
    assert await fence.judge_after_exit(ctx, 0) is None
    assert sorted(room for room, _, _ in observer.sent) == ["!a", "!b"]  # each room the observer is in, once


async def test_a_fence_that_never_arrives_is_not_checked_never_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fence, "FENCE_TIMEOUT_S", 0.1)
    observer = FakeObserver(["!a"], delay_s=None)
    assert await fence.judge_after_exit(ctx_of(observer, [lambda: None]), 0) == \
        "the fence $fence0 in !a did not reach the observer in time"


async def test_a_fence_the_homeserver_refuses_or_no_room_to_send_it_in_is_not_checked() -> None:
    refused = FakeObserver(["!a"], refuse=True)
    assert await fence.judge_after_exit(ctx_of(refused, [lambda: None]), 0) == \
        "no fence could be sent: driver could not send to !a: forbidden"
    left = FakeObserver(["!a", "!b"])  # the client's own list still holds a room the driver left
    await left.events.extend([member("!a", "join"), member("!b", "join"), member("!b", "leave")])
    ctx = ctx_of(left, [lambda: None], rooms={"main": "!a", "dm": "!b"})
    unseen = "the observer is no longer in !b: the bot's events there after it left are not seen"
    assert await fence.judge_after_exit(ctx, 0) == unseen  # a room it left: not a whole view, never a pass
    assert [room for room, _, _ in left.sent] == ["!a"]
    gone = FakeObserver(["!a", "!b"])  # its own leave never reaches its joined rooms' timelines: a sync lists it
    gone.left_rooms.add("!b")
    assert await fence.judge_after_exit(ctx_of(gone, [lambda: None], rooms={"main": "!a", "dm": "!b"}), 0) == unseen
    assert [room for room, _, _ in gone.sent] == ["!a"]
    outside = FakeObserver(["!elsewhere"])
    assert await fence.judge_after_exit(ctx_of(outside, [lambda: None]), 0) == \
        "the observer is in none of the scenario's rooms"
    assert outside.sent == []


async def test_a_bot_still_running_gets_no_fence() -> None:
    observer = FakeObserver(["!a"])
    assert await fence.judge_after_exit(ctx_of(observer, [lambda: None], returncode=None), 0) == \
        "the bot had not exited, so no fence could close its output"
    assert observer.sent == []


async def test_a_cut_or_an_undecryptable_late_event_is_not_checked() -> None:
    observer = FakeObserver(["!a"])
    observer.cut_later.append("!a")
    assert await fence.judge_after_exit(ctx_of(observer, [lambda: None]), 0) == \
        "a sync of the observer skipped part of !a's timeline (limited)"
    locked = FakeObserver(["!a"])
    await locked.events.extend([event("$old", kind="m.room.encrypted")])
    locked.before_fence = [event("$new", kind="m.room.encrypted")]
    assert await fence.judge_after_exit(ctx_of(locked, [lambda: None]), 1) == \
        "1 bot event(s) received after the bot exited could not be decrypted: $new"


class HangingObserver(FakeObserver):
    """A homeserver that never answers the fence's send (nio's client retries a timed-out send without end)."""

    async def send_unencrypted(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_a_fence_send_that_never_answers_is_bounded_and_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The look after the exit runs outside the scenario's timeout: an unanswered send must not hang the run."""
    monkeypatch.setattr(fence, "FENCE_TIMEOUT_S", 0.2)
    said = await asyncio.wait_for(fence.judge_after_exit(ctx_of(HangingObserver(["!a"]), [lambda: None]), 0), 5)
    assert said == "the fences were not sent and received within 0.4 s"


def redaction(event_id: str, target: str, sender: str = BOT, in_content: bool = False) -> dict[str, Any]:
    found = {"event_id": event_id, "sender": sender, "type": "m.room.redaction", "room_id": "!r", "content": {}}
    if in_content:  # room version 11 on
        found["content"] = {"redacts": target}
    else:
        found["redacts"] = target
    return found


def test_what_a_redaction_removes_by_either_room_version() -> None:
    assert redacted_id(redaction("$x", "$r")) == "$r"
    assert redacted_id(redaction("$x", "$r", in_content=True)) == "$r"
    assert redacted_id({"type": "m.room.redaction", "content": {"redacts": "$new"}, "redacts": "$old"}) == "$new"
    assert redacted_id({"type": "m.room.redaction"}) is None


def test_the_bots_redaction_of_a_checked_reply_its_part_or_its_edit_is_a_problem_naming_it() -> None:
    edit = event("$e", **{"m.new_content": {"body": "right"}, "m.relates_to": {"rel_type": "m.replace",
                                                                                "event_id": "$r"}})
    others_edit = event("$oe", sender="@driver:hs", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$r"}})
    unrelated_edit = event("$ue", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$other"}})
    events = [event("$r"), event("$p2"), edit, others_edit, unrelated_edit,
              redaction("$x1", "$r"), redaction("$x2", "$p2", in_content=True), redaction("$x3", "$e"),
              redaction("$x4", "$r", sender="@driver:hs"),  # a test user's (a step's) redaction is not the bot's
              redaction("$x5", "$oe"), redaction("$x6", "$ue"), redaction("$x7", "$unrelated")]
    assert redaction_problems("ask", ["$r", "$p2"], events, IDS) == [
        "the bot redacted its reply $r to 'ask' ($x1): the answer the check passed on is gone",
        "the bot redacted its reply $p2 to 'ask' ($x2): the answer the check passed on is gone",
        "the bot redacted its edit $e of its reply $r to 'ask' ($x3): the reply now says '', not the 'right' the "
        "check passed on",
    ]
    assert redaction_problems("ask", ["$r"], iter(events), BOT)[-1].startswith("the bot redacted its edit $e ")
    assert redaction_problems("ask", ["$r"], events[:5], IDS) == []
    # A message that carries a `redacts` field is no redaction.
    assert redaction_problems("ask", ["$r"], [event("$r"), event("$x", redacts="$r")], IDS) == []


async def test_what_the_whole_view_cannot_tell_is_said_not_checked_with_the_first_looks_mark() -> None:
    observer = FakeObserver(["!a"])
    marks: list[int] = []

    def note(mark: int) -> str | None:
        marks.append(mark)
        return "an untraced message"

    ctx = ctx_of(observer, [lambda: None], notes=[note, lambda _mark: None])
    assert await fence.judge_after_exit(ctx, 3) == "an untraced message"
    assert marks == [3]
    locked = FakeObserver(["!a"])
    locked.before_fence = [event("$new", kind="m.room.encrypted")]
    assert await fence.judge_after_exit(ctx_of(locked, [lambda: None], notes=[note]), 0) == \
        "an untraced message; 1 bot event(s) received after the bot exited could not be decrypted: $new"
    # A check that fails is a failure whatever a note says.
    with pytest.raises(fence.LateFailure):
        await fence.judge_after_exit(ctx_of(FakeObserver(["!a"]), [lambda: "wrong"], notes=[note]), 0)


def test_the_bots_clean_up_after_a_test_user_redacted_the_trigger_is_no_problem() -> None:
    """An honest bot takes its answer back once the question is gone (matrix-redaction-not-a-trigger): only a
    redaction of the trigger by someone else, earlier, makes the bot's redaction clean-up."""
    question = event("$ask", sender="@driver:hs")
    gone = redaction("$xq", "$ask", sender="@driver:hs")
    cleanup = redaction("$xr", "$r")
    assert redaction_problems("ask", ["$r"], [question, event("$r"), gone, cleanup], IDS, "$ask") == []
    # The bot's redaction before the question was removed, or of a trigger the bot removed itself, is no clean-up.
    before = redaction_problems("ask", ["$r"], [question, event("$r"), cleanup, gone], IDS, "$ask")
    assert before == ["the bot redacted its reply $r to 'ask' ($xr): the answer the check passed on is gone"]
    itself = [question, event("$r"), redaction("$xb", "$ask"), cleanup]
    assert len(redaction_problems("ask", ["$r"], itself, IDS, "$ask")) == 1
    # Another event's redaction by a test user excuses nothing.
    other = [question, event("$r"), redaction("$xo", "$other", sender="@driver:hs"), cleanup]
    assert len(redaction_problems("ask", ["$r"], other, IDS, "$ask")) == 1


def edit_of(event_id: str, target: str, body: str) -> dict[str, Any]:
    return event(event_id, body=f"* {body}", **{"m.new_content": {"body": body},
                                                "m.relates_to": {"rel_type": "m.replace", "event_id": target}})


def test_the_bots_redaction_of_an_edit_fails_only_when_the_reply_no_longer_says_what_the_check_passed_on() -> None:
    """Reply $r, edit $e1 'wrong', edit $e2 'T' (the check passed on 'T'): redacting $e1 leaves 'T' shown."""
    chain = [event("$r", body="draft"), edit_of("$e1", "$r", "wrong"), edit_of("$e2", "$r", "T")]
    passed = {"$r": "T"}
    assert redaction_problems("ask", ["$r"], [*chain, redaction("$x1", "$e1")], IDS, "$ask", passed) == []
    assert redaction_problems("ask", ["$r"], [*chain, redaction("$x2", "$e2")], IDS, "$ask", passed) == [
        "the bot redacted its edit $e2 of its reply $r to 'ask' ($x2): the reply now says 'wrong', not the 'T' the "
        "check passed on"]
    # Both edits gone: the reply's own text.
    both = [*chain, redaction("$x1", "$e1"), redaction("$x2", "$e2")]
    assert redaction_problems("ask", ["$r"], both, IDS, "$ask", passed)[0].endswith(
        "the reply now says 'draft', not the 'T' the check passed on")
    # An edit the bot took back and sent again (the same text shown): nothing changed.
    again = [*chain, redaction("$x2", "$e2"), edit_of("$e3", "$r", "T")]
    assert redaction_problems("ask", ["$r"], again, IDS, "$ask", passed) == []


def test_which_taken_back_edits_change_what_the_reply_says() -> None:
    chain = [event("$r", body="draft"), edit_of("$e1", "$r", "T"), edit_of("$e2", "$r", "U")]
    # Back to the text the check passed on ('T', then edited to 'U'): what a reader sees is what was checked.
    assert redaction_problems("ask", ["$r"], [*chain, redaction("$x2", "$e2")], IDS, "$ask", {"$r": "T"}) == []
    # A superseded edit taken back: the reply still says 'U', which a later edit, not the redaction, made so.
    assert redaction_problems("ask", ["$r"], [*chain, redaction("$x1", "$e1")], IDS, "$ask", {"$r": "T"}) == []
    # Both taken back, on the second of two checked messages (the first has none): named together.
    both = [event("$p1"), *chain, redaction("$x1", "$e1"), redaction("$x2", "$e2")]
    assert redaction_problems("ask", ["$p1", "$r"], both, IDS, "$ask", {"$p1": "hi", "$r": "U"}) == [
        "the bot redacted its edits $e1, $e2 of its reply $r to 'ask' ($x1, $x2): the reply now says 'draft', not "
        "the 'U' the check passed on"]
    # A reply the client never saw: nothing to tell of its text.
    assert redaction_problems("ask", ["$r"], [*chain[1:], redaction("$x2", "$e2")], IDS, "$ask", {"$r": "U"}) == []
