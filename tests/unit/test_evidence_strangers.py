"""qa.evidence.events.strangers_messages: a failed wait for the bot's reply shows what accounts that are neither
the bot's nor the scenario's users said (issue 33: an application service answering outside its namespace)."""

from __future__ import annotations

from qa.evidence.events import BotIdentity, strangers_messages

ROOM = "!r:hs"
BOT = BotIdentity(frozenset({"@mqa_as-1a2b3c4d-bot:hs"}), "mqa_as-1a2b3c4d-")
KNOWN = {"@mqa-driver-1:hs"}


def msg(sender: str, body: str = "hi", room: str = ROOM, **extra: object) -> dict:
    return {"type": "m.room.message", "room_id": room, "sender": sender, "event_id": f"${body}",
            "content": {"msgtype": "m.text", "body": body}, **extra}


def test_a_stranger_s_message_is_shown_with_its_sender() -> None:
    lines = strangers_messages([msg("@mqa_as-stray-1a2b3c4d-bot:hs", "tok-1")], ROOM, BOT, KNOWN)
    assert lines == ["room: m.room.message from=@mqa_as-stray-1a2b3c4d-bot:hs id=$tok-1 body='tok-1' "
                     "(from none of the bot's accounts)"]


def test_the_bot_s_the_known_users_and_other_rooms_messages_are_not_strangers() -> None:
    events = [msg("@mqa_as-1a2b3c4d-bot:hs"), msg("@mqa_as-1a2b3c4d-agent:hs"), msg("@mqa-driver-1:hs"),
              msg("@x:hs", room="!other:hs"), {**msg("@x:hs"), "type": "m.reaction"},
              {"type": "m.room.member", "room_id": ROOM, "sender": "@x:hs", "state_key": "@x:hs", "content": {}}]
    assert strangers_messages(events, ROOM, BOT, KNOWN) == []


def test_a_state_event_of_message_type_is_not_a_message() -> None:
    assert strangers_messages([msg("@x:hs", state_key="")], ROOM, BOT, KNOWN) == []


def test_a_plain_bot_id_works_as_well() -> None:
    assert strangers_messages([msg("@bot:hs"), msg("@x:hs", "b")], ROOM, "@bot:hs", set())[0].startswith(
        "room: m.room.message from=@x:hs ")


def test_only_the_last_few_are_shown() -> None:
    events = [msg("@x:hs", f"m{i}") for i in range(8)]
    lines = strangers_messages(events, ROOM, BOT, KNOWN, limit=3)
    assert [line.split(" id=")[1].split(" ")[0] for line in lines] == ["$m5", "$m6", "$m7"]
    assert len(strangers_messages(events, ROOM, BOT, KNOWN)) == 5
    assert strangers_messages(events, ROOM, BOT, KNOWN, limit=0) == []
    assert [line.split(" id=")[1][:3] for line in strangers_messages(events, ROOM, BOT, KNOWN, limit=1)] == ["$m7"]
