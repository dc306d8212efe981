"""The bot-to-bot exchange as the room showed it (qa.evidence.exchange, issue 27): the two bots' new messages after
the opener, counted per bot, and the bound that fails with the count."""

from __future__ import annotations

from typing import Any

from qa.evidence.exchange import (
    describe_counts,
    exchange_counts,
    exchange_problem,
    in_exchange,
    opener_index,
)

BOT, PEER, PERSON, ROOM = "@bot:hs", "@peer:hs", "@driver:hs", "!r:hs"
SPEAKERS = {BOT: "bot", PEER: "peer"}


def _msg(sender: str, n: int, room: str = ROOM, **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "room_id": room, "event_id": f"$e{n}",
            "content": {"msgtype": "m.text", "body": f"m{n}", **content}}


def test_only_the_two_bots_new_messages_in_the_room_are_the_exchange() -> None:
    assert in_exchange(_msg(BOT, 1), ROOM, SPEAKERS)
    assert in_exchange(_msg(PEER, 1), ROOM, SPEAKERS)
    assert in_exchange(_msg(PEER, 1, **{"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}), ROOM, SPEAKERS)
    assert not in_exchange(_msg(PERSON, 1), ROOM, SPEAKERS)
    assert not in_exchange(_msg(BOT, 1, room="!other:hs"), ROOM, SPEAKERS)
    assert not in_exchange({**_msg(BOT, 1), "type": "m.reaction"}, ROOM, SPEAKERS)
    assert not in_exchange(_msg(BOT, 1, **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$e0"}}), ROOM,
                           SPEAKERS)
    assert in_exchange(_msg(BOT, 1, **{"m.relates_to": {"rel_type": "m.thread", "event_id": "$e0"}}), ROOM,
                       SPEAKERS)
    assert in_exchange({**_msg(BOT, 1), "content": "not a mapping"}, ROOM, SPEAKERS)


def test_counts_start_after_the_opener_and_name_each_bot() -> None:
    events = [_msg(BOT, 0), _msg(PERSON, 1), _msg(BOT, 2), _msg(PEER, 3), _msg(PEER, 4),
              _msg(BOT, 5, room="!other:hs"), _msg(PERSON, 6)]
    assert opener_index(events, "$e1") == 1
    assert opener_index(events, "$e0") == 0
    assert opener_index(events, "$nope") is None
    assert exchange_counts(events, "$e1", ROOM, SPEAKERS) == {"bot": 1, "peer": 2}
    assert exchange_counts(events, "$e0", ROOM, SPEAKERS) == {"bot": 1, "peer": 2}  # the opener itself never counts
    assert exchange_counts(events, "$nope", ROOM, SPEAKERS) == {"bot": 0, "peer": 0}
    assert exchange_counts([], "$e1", ROOM, SPEAKERS) == {"bot": 0, "peer": 0}


def test_the_bound_and_the_words_of_the_count() -> None:
    assert describe_counts({"bot": 4, "peer": 5}) == "9 messages (bot 4, peer 5)"
    assert describe_counts({"bot": 1, "peer": 0}) == "1 message (bot 1, peer 0)"
    assert describe_counts({"bot": 0, "peer": 0}) == "0 messages (bot 0, peer 0)"
    assert exchange_problem({"bot": 4, "peer": 5}, 9) is None
    assert exchange_problem({"bot": 8, "peer": 7}, 14) == (
        "the bots sent 15 messages (bot 8, peer 7) after the opener, more than 14: the exchange went on")
    assert exchange_problem({"bot": 5, "peer": 5}, 9) is not None
