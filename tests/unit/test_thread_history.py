"""A thread older than the bot's first sync: which of its messages become the first turn's context
(qa.agent.thread_history), and when a turn asks for them at all."""

from __future__ import annotations

from qa.agent.thread_history import MAX_MESSAGES, first_turn_of_thread, history_records

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
