"""The mautrix command bot's pure decisions: who addresses it, what its command says, where its answer goes."""

from __future__ import annotations

from pathlib import Path

from tests.bots.mautrix_command_bot import (
    Policy,
    Settings,
    command_text,
    drop_reason,
    reply_content,
    retry_delay_s,
)

BOT = "@bot:hs"


def _event(body: str = "!echo hi", sender: str = "@u:hs", mention: bool = True, **content: object) -> dict:
    return {"event_id": "$e", "sender": sender, "content": {"msgtype": "m.text", "body": body,
                                                            "m.mentions": {"user_ids": [BOT] if mention else []},
                                                            **content}}


def test_who_addresses_the_bot() -> None:
    assert drop_reason(_event(), BOT, Policy()) is None
    assert drop_reason(_event(mention=False), BOT, Policy()) == "mention-required"
    assert drop_reason(_event(mention=False), BOT, Policy(require_mention=False)) is None
    assert drop_reason(_event(mention=False), BOT, Policy(), bug="answer-unmentioned") is None
    assert drop_reason(_event(sender=BOT), BOT, Policy()) == "own-message"
    assert drop_reason(_event(msgtype="m.notice"), BOT, Policy()) == "notice"
    assert drop_reason(_event(msgtype="m.image"), BOT, Policy()) == "not-a-text-message"
    assert drop_reason(_event(**{"m.relates_to": {"rel_type": "m.replace"}}), BOT, Policy()) == "edit"
    assert drop_reason(_event(), BOT, Policy(allowlist=frozenset({"@x:hs"}))) == "sender-not-allowed"
    bots = frozenset({"@u:hs"})
    assert drop_reason(_event(), BOT, Policy(known_bots=bots)) == "bot-sender-blocked"
    assert drop_reason(_event(mention=False), BOT, Policy(known_bots=bots, allow_bots="mentions",
                                                          require_mention=False)) == "mention-required"


def test_the_command_after_a_mention_prefix() -> None:
    assert command_text("!echo MQA-1") == "MQA-1"
    assert command_text("Bot: !echo MQA-1") == "MQA-1"
    assert command_text("say !echo MQA-1") is None and command_text("!echo") is None


def test_where_the_answer_goes() -> None:
    threaded = _event(**{"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}})
    assert reply_content("x", threaded, Policy())["m.relates_to"] == {
        "rel_type": "m.thread", "event_id": "$root", "is_falling_back": True, "m.in_reply_to": {"event_id": "$e"}}
    assert reply_content("x", threaded, Policy(), bug="thread-top-level")["m.relates_to"] == {
        "m.in_reply_to": {"event_id": "$e"}}
    assert "m.relates_to" not in reply_content("x", _event(), Policy(direct=True))
    assert reply_content("x", _event(), Policy(thread_replies="always"))["m.relates_to"]["event_id"] == "$e"


def test_a_room_policy_from_the_scenario_settings() -> None:
    settings = Settings("http://hs", BOT, "t", "D", ("!a:hs", "!dm:hs"), Path("/s"), {
        "requireMention": True, "allowBots": "off", "knownBots": ["@k:hs"], "directRooms": ["!dm:hs"],
        "roomSettings": {"!a:hs": {"requireMention": False, "allowlist": ["@u:hs"], "allowBots": "all"}}})
    assert settings.policy("!a:hs") == Policy(False, frozenset({"@u:hs"}), "all", frozenset({"@k:hs"}))
    assert settings.policy("!dm:hs").require_mention is False and settings.policy("!dm:hs").direct


def test_a_rate_limit_waits_as_told_and_a_refusal_is_final() -> None:
    assert retry_delay_s(429, {"retry_after_ms": 700}, 0) == 0.7
    assert retry_delay_s(502, {}, 9) == 2.0
    assert retry_delay_s(403, {}, 0) is None
