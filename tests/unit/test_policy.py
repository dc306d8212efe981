"""The bot's inbound decisions as tables: no servers, just Inbound + RoomPolicy -> (accept | drop, reason)."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args

import pytest

from qa.agent.config import RoomConfig
from qa.agent.policy import (
    BOT_SENDER_BLOCKED,
    DUPLICATE,
    EDIT,
    HISTORY,
    MENTION_REQUIRED,
    NOT_BOT_MESSAGE,
    NOT_TEXT,
    NOTICE,
    OWN_MESSAGE,
    RECORDED,
    SENDER_NOT_ALLOWED,
    UNDECRYPTABLE,
    UNKNOWN_ROOM,
    AllowBots,
    Decision,
    Inbound,
    RoomPolicy,
    decide,
    decide_reaction,
    mentions_user,
    parse_inbound,
    session_key,
)

BOT = "@bot:hs"
ALICE = "@alice:hs"
MALLORY = "@mallory:hs"
OTHER_BOT = "@otherbot:hs"
ROOM = "!room:hs"
ACCEPTED = "accepted"


def inbound(sender: str = ALICE, *, mentioned: bool = True, msgtype: str = "m.text", edit: bool = False) -> Inbound:
    return Inbound(event_id="$e", room_id=ROOM, sender=sender, msgtype=msgtype, body="hi", mentioned=mentioned,
                   is_edit=edit)


def policy(**overrides: Any) -> RoomPolicy:
    return RoomPolicy(**{"known_bots": frozenset({OTHER_BOT}), **overrides})


DECISIONS = [
    # (case, event, room policy, expected reason)
    ("mention in a gated room", inbound(), policy(), ACCEPTED),
    ("no mention in a gated room", inbound(mentioned=False), policy(), MENTION_REQUIRED),
    ("gating is the default", inbound(mentioned=False), RoomPolicy(), MENTION_REQUIRED),
    ("no mention, gating off", inbound(mentioned=False), policy(require_mention=False), ACCEPTED),
    ("own message", inbound(BOT), policy(), OWN_MESSAGE),
    ("room not configured", inbound(), None, UNKNOWN_ROOM),
    ("image", inbound(msgtype="m.image"), policy(), NOT_TEXT),
    ("notice (bot output)", inbound(msgtype="m.notice"), policy(require_mention=False), NOTICE),
    ("emote", inbound(msgtype="m.emote"), policy(), ACCEPTED),
    ("edit", inbound(edit=True), policy(), EDIT),
    # allowBots
    ("known bot, default off, mentions us", inbound(OTHER_BOT), policy(), BOT_SENDER_BLOCKED),
    ("known bot, off, gating off", inbound(OTHER_BOT, mentioned=False), policy(require_mention=False),
     BOT_SENDER_BLOCKED),
    ("known bot, mentions, mentions us", inbound(OTHER_BOT), policy(allow_bots="mentions"), ACCEPTED),
    ("known bot, mentions, no mention", inbound(OTHER_BOT, mentioned=False), policy(allow_bots="mentions"),
     MENTION_REQUIRED),
    ("known bot, mentions, no mention, gating off", inbound(OTHER_BOT, mentioned=False),
     policy(allow_bots="mentions", require_mention=False), MENTION_REQUIRED),
    ("known bot, all, mentions us", inbound(OTHER_BOT), policy(allow_bots="all"), ACCEPTED),
    ("known bot, all, no mention, gated room", inbound(OTHER_BOT, mentioned=False), policy(allow_bots="all"),
     MENTION_REQUIRED),
    ("known bot, all, no mention, gating off", inbound(OTHER_BOT, mentioned=False),
     policy(allow_bots="all", require_mention=False), ACCEPTED),
    ("unknown bot is just a user", inbound("@unlisted-bot:hs"), policy(), ACCEPTED),
    # sender allowlist
    ("on the allowlist", inbound(), policy(allowlist=frozenset({ALICE})), ACCEPTED),
    ("mentioned, not on the allowlist", inbound(MALLORY), policy(allowlist=frozenset({ALICE})), SENDER_NOT_ALLOWED),
    ("empty allowlist lets nobody in", inbound(), policy(allowlist=frozenset()), SENDER_NOT_ALLOWED),
    ("not on the allowlist, gating off", inbound(MALLORY, mentioned=False),
     policy(allowlist=frozenset({ALICE}), require_mention=False), SENDER_NOT_ALLOWED),
    ("allowed bot still needs the allowlist", inbound(OTHER_BOT),
     policy(allow_bots="mentions", allowlist=frozenset({ALICE})), SENDER_NOT_ALLOWED),
]


@pytest.mark.parametrize(("case", "event", "room", "reason"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_decide(case: str, event: Inbound, room: RoomPolicy | None, reason: str) -> None:
    decision = decide(event, BOT, room)
    assert decision.reason == reason
    assert decision.accept is (reason == ACCEPTED)
    assert decision.label == ("accepted" if reason == ACCEPTED else "dropped")


PILL = f'<a href="https://matrix.to/#/{BOT}">bot</a>: hi'
MENTIONS = [
    # (case, content, mentions the bot?)
    ("intentional mention", {"body": "bot: hi", "m.mentions": {"user_ids": [BOT]}}, True),
    ("intentional mention of someone else", {"body": "hi", "m.mentions": {"user_ids": [ALICE]}}, False),
    ("id in body, m.mentions leaves it out", {"body": f"{BOT}: hi", "m.mentions": {}}, False),
    ("pill, m.mentions leaves it out", {"body": "bot: hi", "formatted_body": PILL, "m.mentions": {}}, False),
    ("room mention only", {"body": "@room hi", "m.mentions": {"room": True}}, False),
    ("malformed user_ids", {"body": "hi", "m.mentions": {"user_ids": BOT}}, False),
    ("legacy client: pill, no m.mentions", {"body": "bot: hi", "formatted_body": PILL}, True),
    ("legacy client: id in body, no m.mentions", {"body": f"{BOT}: hi"}, True),
    ("legacy client: nothing", {"body": "hello bot"}, False),
]


@pytest.mark.parametrize(("case", "content", "expected"), MENTIONS, ids=[m[0] for m in MENTIONS])
def test_mentions_user(case: str, content: dict[str, Any], expected: bool) -> None:
    assert mentions_user(content, BOT) is expected


REACTIONS = [
    # (case, sender, room policy, on a bot message?, expected reason)
    ("allowed user on a bot message", ALICE, policy(), True, RECORDED),
    ("on someone else's message", ALICE, policy(), False, NOT_BOT_MESSAGE),
    ("the bot's own reaction", BOT, policy(), True, OWN_MESSAGE),
    ("room not configured", ALICE, None, True, UNKNOWN_ROOM),
    ("not on the allowlist", MALLORY, policy(allowlist=frozenset({ALICE})), True, SENDER_NOT_ALLOWED),
    ("known bot, allowBots off", OTHER_BOT, policy(), True, BOT_SENDER_BLOCKED),
    ("known bot, allowBots mentions", OTHER_BOT, policy(allow_bots="mentions"), True, RECORDED),
    # A reaction cannot mention anyone, so the mention rule must not swallow it.
    ("gated room", ALICE, policy(require_mention=True), True, RECORDED),
]


@pytest.mark.parametrize(("case", "sender", "room", "on_bot", "reason"), REACTIONS, ids=[r[0] for r in REACTIONS])
def test_decide_reaction(case: str, sender: str, room: RoomPolicy | None, on_bot: bool, reason: str) -> None:
    decision = decide_reaction(sender, BOT, room, on_bot_message=on_bot)
    assert decision.reason == reason
    assert decision.accept is (reason == RECORDED)


def event(content: dict[str, Any], sender: str = ALICE) -> dict[str, Any]:
    return {"event_id": "$e", "room_id": ROOM, "sender": sender, "type": "m.room.message", "content": content}


PARSES = [
    # (case, content, thread root, is edit)
    ("top level", {"msgtype": "m.text", "body": "hi"}, None, False),
    ("in a thread", {"msgtype": "m.text", "body": "hi", "m.relates_to": {
        "rel_type": "m.thread", "event_id": "$root", "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$prev"}}}, "$root", False),
    ("rich reply is not a thread", {"msgtype": "m.text", "body": "hi", "m.relates_to": {
        "m.in_reply_to": {"event_id": "$prev"}}}, None, False),
    ("edit", {"msgtype": "m.text", "body": "* hi", "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}},
     None, True),
]


@pytest.mark.parametrize(("case", "content", "root", "is_edit"), PARSES, ids=[p[0] for p in PARSES])
def test_parse_inbound(case: str, content: dict[str, Any], root: str | None, is_edit: bool) -> None:
    parsed = parse_inbound(event(content), BOT)
    assert (parsed.thread_root, parsed.is_edit) == (root, is_edit)
    assert (parsed.event_id, parsed.room_id, parsed.sender, parsed.body) == ("$e", ROOM, ALICE, content["body"])


def test_each_thread_is_its_own_session_and_the_top_level_another() -> None:
    # Session keys are written into traces and transcripts, so their spelling is pinned, not just their identity.
    assert session_key(ROOM, None) == "!room:hs/main"
    assert session_key(ROOM, "$t1") == "!room:hs/thread/$t1"
    assert session_key(ROOM, "") == "!room:hs/main"  # an empty thread root is no thread
    keys = {session_key(ROOM, None), session_key(ROOM, "$t1"), session_key(ROOM, "$t2"), session_key("!b:hs", None)}
    assert len(keys) == 4


WIRE_REASONS = [
    (OWN_MESSAGE, "own-message"), (UNKNOWN_ROOM, "room-not-configured"), (NOT_TEXT, "not-a-text-message"),
    (NOTICE, "notice"), (EDIT, "edit"), (MENTION_REQUIRED, "mention-required"),
    (BOT_SENDER_BLOCKED, "bot-sender-blocked"), (SENDER_NOT_ALLOWED, "sender-not-allowed"),
    (DUPLICATE, "duplicate"), (HISTORY, "history"), (UNDECRYPTABLE, "undecryptable"),
    (NOT_BOT_MESSAGE, "not-a-bot-message"), (RECORDED, "recorded"),
]


@pytest.mark.parametrize(("constant", "wire"), WIRE_REASONS, ids=[w for _, w in WIRE_REASONS])
def test_drop_reasons_are_the_documented_wire_strings(constant: str, wire: str) -> None:
    # Scenarios and reports match on these strings in traces: renaming one silently breaks them.
    assert constant == wire


def test_acceptance_is_spelled_accepted() -> None:
    assert decide(inbound(), BOT, policy()) == Decision(True, "accepted")
    assert (Decision(True, "x").label, Decision(False, "x").label) == ("accepted", "dropped")


def test_parse_inbound_reads_msgtype_mention_and_body() -> None:
    mentioning = parse_inbound(event({"msgtype": "m.emote", "body": f"waves at {BOT}"}), BOT)
    assert (mentioning.msgtype, mentioning.mentioned, mentioning.body) == ("m.emote", True, f"waves at {BOT}")
    plain = parse_inbound(event({"msgtype": "m.text", "body": "hi", "m.mentions": {}}), BOT)
    assert (plain.msgtype, plain.mentioned) == ("m.text", False)
    # A parsed text message that mentions the bot is what decide() accepts: the two agree on the wire names.
    assert decide(mentioning, BOT, policy()).accept


def test_parse_inbound_of_an_empty_event_does_not_raise() -> None:
    parsed = parse_inbound({}, BOT)
    assert parsed == Inbound(event_id="", room_id="", sender="", msgtype=None, body="", mentioned=False,
                             thread_root=None, is_edit=False)
    assert decide(parsed, BOT, policy()).reason == NOT_TEXT
    assert parse_inbound({"content": None, "sender": ALICE}, BOT).sender == ALICE
    assert parse_inbound({"content": {"m.relates_to": None, "body": 5}}, BOT).body == "5"


def test_the_policy_type_and_the_agent_config_accept_the_same_allow_bots_values() -> None:
    # The config validates allowBots with its own Literal; a value one side knows and the other not would
    # either be refused at load time or reach decide() unhandled.
    accepted = get_args(RoomConfig.model_fields["allow_bots"].annotation)
    assert get_args(AllowBots) == accepted == ("off", "mentions", "all")
    assert RoomConfig().allow_bots == RoomPolicy().allow_bots == "off"


def test_decisions_policies_and_events_are_immutable_values() -> None:
    # One ACCEPT and one RoomPolicy per room are shared by every event: nobody may change them in passing.
    accepted = decide(inbound(), BOT, policy())
    room = policy()
    parsed = parse_inbound(event({"msgtype": "m.text", "body": "hi"}), BOT)
    for value, attr in ((accepted, "accept"), (room, "require_mention"), (parsed, "body")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, attr, None)
    assert len({policy(), policy()}) == 1


def test_an_inbound_built_from_the_required_fields_is_a_plain_top_level_message() -> None:
    # Resuming a session rebuilds Inbound from a transcript record without these fields.
    bare = Inbound(event_id="$e", room_id=ROOM, sender=ALICE, msgtype="m.text", body="hi", mentioned=True)
    assert bare.is_edit is False
    assert bare.thread_root is None
    assert session_key(bare.room_id, bare.thread_root) == "!room:hs/main"
    assert decide(bare, BOT, policy()).accept
