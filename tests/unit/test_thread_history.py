"""A thread older than the bot's first sync: which of its messages become its turns' context
(qa.agent.thread_history), when a turn asks for them at all, and later turns reusing them (qa.agent.turn_io)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qa.agent.config import AgentConfig
from qa.agent.policy import Inbound
from qa.agent.thread_history import MAX_MESSAGES, first_turn_of_thread, history_anchor, history_records
from qa.agent.turn_io import MAX_THREADS_KEPT, TurnIO
from qa.kernel.trace import Trace

BOT = "@bot:hs"


def msg(event_id: str, body: str, ts: int, sender: str = "@a:hs", **content: object) -> dict:
    return {"type": "m.room.message", "event_id": event_id, "sender": sender, "origin_server_ts": ts,
            "content": {"msgtype": "m.text", "body": body, **content}}


ROOT = msg("$root", "the root", 1)


def test_root_first_then_the_thread_oldest_first_up_to_the_trigger() -> None:
    events = [msg("$later", "after", 9), msg("$ask", "ask", 5), msg("$two", "two", 3), msg("$one", "one", 2)]
    records = history_records(events, ROOT, "$ask", BOT, set())
    assert [r["eventId"] for r in records] == ["$root", "$one", "$two"]
    assert records[1] == {"kind": "user", "content": "@a:hs: one", "eventId": "$one", "history": True}


def test_the_bots_own_known_encrypted_and_non_text_events_are_left_out() -> None:
    events = [msg("$mine", "answer", 2, sender=BOT), msg("$known", "k", 3), msg("$notice", "n", 4, msgtype="m.notice"),
              {"type": "m.room.encrypted", "event_id": "$enc", "sender": "@a:hs", "origin_server_ts": 5, "content": {}},
              msg("$img", "cat.png", 6, msgtype="m.image"),
              {**msg("$nobody", "x", 7), "content": {"msgtype": "m.text"}},
              msg("$emote", "waves", 8, msgtype="m.emote"), msg("$ask", "ask", 10)]
    records = history_records(events, None, "$ask", BOT, {"$known"})
    assert [r["eventId"] for r in records] == ["$emote"]


def test_a_trigger_not_in_the_chunk_keeps_everything_and_the_root_can_be_the_trigger() -> None:
    assert [r["eventId"] for r in history_records([msg("$one", "one", 2)], ROOT, "$gone", BOT, set())] == \
        ["$root", "$one"]
    assert history_records([], ROOT, "$root", BOT, set()) == []


def test_equal_timestamps_order_by_event_id_and_the_newest_are_kept() -> None:
    events = [msg(f"$e{i:03d}", str(i), 1) for i in range(MAX_MESSAGES + 5)]
    records = history_records(events, None, "$ask", BOT, set())
    assert len(records) == MAX_MESSAGES
    assert records[0]["eventId"] == "$e005" and records[-1]["eventId"] == f"$e{MAX_MESSAGES + 4:03d}"


def test_only_a_sessions_first_turn_asks() -> None:
    assert first_turn_of_thread([], "$ask")
    assert first_turn_of_thread([{"kind": "user", "eventId": "$ask"}, {"kind": "notice", "eventId": "$x"}], "$ask")
    assert not first_turn_of_thread([{"kind": "user", "eventId": "$old"}, {"kind": "user", "eventId": "$ask"}], "$ask")


def test_equal_timestamps_are_ordered_by_event_id_whatever_the_servers_order() -> None:
    events = [msg("$c", "c", 1), msg("$a", "a", 1), msg("$b", "b", 1)]
    assert [r["eventId"] for r in history_records(events, None, "$ask", BOT, set())] == ["$a", "$b", "$c"]


def test_the_unrecorded_past_ends_before_the_sessions_first_recorded_message() -> None:
    assert history_anchor([], "$ask", "$root") == "$ask"  # a first turn: everything before the trigger
    first = [{"kind": "notice", "eventId": "$n"}, {"kind": "user"}, {"kind": "user", "eventId": "$ask"}]
    assert history_anchor(first, "$ask", "$root") == "$ask"
    later = [{"kind": "user", "eventId": "$ask"}, {"kind": "assistant", "eventId": "$re"},
             {"kind": "user", "eventId": "$again"}]
    assert history_anchor(later, "$again", "$root") == "$ask"  # a later turn: still the past before the first
    # Recorded from its root (the bot answered the root, or threadReplies put the answer in a thread on it).
    assert history_anchor([{"kind": "user", "eventId": "$root"}, {"kind": "user", "eventId": "$x"}], "$x",
                          "$root") is None
    assert history_anchor([], "$root", "$root") is None


def _inbound(event_id: str) -> Inbound:
    return Inbound(event_id=event_id, room_id="!r:hs", sender="@a:hs", msgtype="m.text", body="b", mentioned=True,
                   thread_root="$root")


def _io(tmp_path: Path, *mutations: str) -> tuple[TurnIO, Path]:
    cfg = AgentConfig.model_validate({"homeserver": "http://hs", "userId": BOT, "stateDir": str(tmp_path),
                                      "rooms": {"!r:hs": {}}, "model": {"baseUrl": "http://m", "model": "x"},
                                      "testMutations": list(mutations)})
    trace = tmp_path / f"trace-{len(mutations)}.jsonl"
    return TurnIO(cfg, Trace(trace), lambda *a: None, lambda _root, _to: None, lambda: ("http://hs", "t")), trace


THREAD = (ROOT, [msg("$one", "one", 2), msg("$ask", "ask", 5), msg("$re", "answer", 6, sender=BOT),
                 msg("$between", "between", 7)])


@pytest.mark.parametrize("mutations", [(), ("thread-history-first-turn-only",), ("no-thread-history",)])
async def test_every_turn_of_an_unrecorded_thread_gets_its_past_fetched_once(
        tmp_path: Path, monkeypatch: Any, mutations: tuple[str, ...]) -> None:
    fetches: list[str] = []

    async def fetch(homeserver: str, token: str, room_id: str, root: str) -> Any:
        fetches.append(root)
        return THREAD

    monkeypatch.setattr("qa.agent.turn_io.fetch_thread", fetch)
    io, trace = _io(tmp_path, *mutations)
    first = await io.thread_history("!r:hs", "$root", [{"kind": "user", "eventId": "$ask"}], _inbound("$ask"),
                                    "s", "a1")
    records = [{"kind": "user", "eventId": "$ask"}, {"kind": "assistant", "content": "answer"},
               {"kind": "user", "eventId": "$again"}]
    later = await io.thread_history("!r:hs", "$root", records, _inbound("$again"), "s", "a2")
    past = ["@a:hs: the root", "@a:hs: one"]
    if "no-thread-history" in mutations:
        assert (first, later, fetches) == ([], [], [])
        return
    assert [r["content"] for r in first] == past
    # The later turn: the same past (not the messages since the first, which are not the thread's past), no fetch.
    assert [r["content"] for r in later] == ([] if mutations else past)
    assert fetches == ["$root"]
    assert await io.thread_history("!r:hs", None, [], _inbound("$top"), "s", "a3") == []  # the top level
    recorded = [{"kind": "user", "eventId": "$root"}]
    assert await io.thread_history("!r:hs", "$root", recorded, _inbound("$root2"), "s", "a4") == []
    assert fetches == ["$root"]
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(r["type"], r["attempt"], r["messages"], r["fetched"]) for r in lines] == [
        ("thread.history", "a1", 2, True), *([] if mutations else [("thread.history", "a2", 2, False)])]


async def test_the_kept_threads_are_bounded_and_a_failed_fetch_is_traced_and_not_kept(
        tmp_path: Path, monkeypatch: Any) -> None:
    fetches: list[str] = []

    async def fetch(homeserver: str, token: str, room_id: str, root: str) -> Any:
        fetches.append(root)
        if root == "$broken":
            raise OSError("refused")
        return THREAD

    monkeypatch.setattr("qa.agent.turn_io.fetch_thread", fetch)
    io, trace = _io(tmp_path)
    assert await io.thread_history("!r:hs", "$broken", [], _inbound("$ask"), "s", "a") == []
    assert await io.thread_history("!r:hs", "$broken", [], _inbound("$ask"), "s", "a") == []
    assert fetches == ["$broken", "$broken"]  # a failure is not remembered: the next turn asks again
    errors = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(r["type"], r["where"], r["error"]) for r in errors] == [("error", "thread.history", "refused")] * 2
    for n in range(MAX_THREADS_KEPT + 1):
        await io.thread_history("!r:hs", f"$t{n}", [], _inbound("$ask"), "s", "a")
    assert len(io._threads) == MAX_THREADS_KEPT and ("!r:hs", "$t0") not in io._threads
    assert ("!r:hs", f"$t{MAX_THREADS_KEPT}") in io._threads
    await io.thread_history("!r:hs", "$t1", [], _inbound("$ask"), "s", "a")
    assert fetches.count("$t1") == 1 and fetches.count("$t0") == 1
