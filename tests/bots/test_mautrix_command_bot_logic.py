"""The mautrix command bot's pure decisions: who addresses it, what its command says, where its answer goes."""

from __future__ import annotations

from pathlib import Path

from tests.lazy_module import LazyModule

# Imported by the first test that runs, not at collection (tests/lazy_module.py).
bot = LazyModule("tests.bots.mautrix_command_bot")


BOT = "@bot:hs"


def _event(body: str = "!echo hi", sender: str = "@u:hs", mention: bool = True, **content: object) -> dict:
    return {"event_id": "$e", "sender": sender, "content": {"msgtype": "m.text", "body": body,
                                                            "m.mentions": {"user_ids": [BOT] if mention else []},
                                                            **content}}


def test_who_addresses_the_bot() -> None:
    assert bot.drop_reason(_event(), BOT, bot.Policy()) is None
    assert bot.drop_reason(_event(mention=False), BOT, bot.Policy()) == "mention-required"
    assert bot.drop_reason(_event(mention=False), BOT, bot.Policy(require_mention=False)) is None
    assert bot.drop_reason(_event(mention=False), BOT, bot.Policy(), bug="answer-unmentioned") is None
    assert bot.drop_reason(_event(sender=BOT), BOT, bot.Policy()) == "own-message"
    assert bot.drop_reason(_event(msgtype="m.notice"), BOT, bot.Policy()) == "notice"
    assert bot.drop_reason(_event(msgtype="m.image"), BOT, bot.Policy()) == "not-a-text-message"
    assert bot.drop_reason(_event(**{"m.relates_to": {"rel_type": "m.replace"}}), BOT, bot.Policy()) == "edit"
    assert bot.drop_reason(_event(), BOT, bot.Policy(allowlist=frozenset({"@x:hs"}))) == "sender-not-allowed"
    bots = frozenset({"@u:hs"})
    assert bot.drop_reason(_event(), BOT, bot.Policy(known_bots=bots)) == "bot-sender-blocked"
    assert bot.drop_reason(_event(mention=False), BOT, bot.Policy(known_bots=bots, allow_bots="mentions",
                                                                  require_mention=False)) == "mention-required"


def test_the_command_after_a_mention_prefix() -> None:
    assert bot.command_text("!echo MQA-1") == "MQA-1"
    assert bot.command_text("Bot: !echo MQA-1") == "MQA-1"
    assert bot.command_text("say !echo MQA-1") is None and bot.command_text("!echo") is None
    # --bare (say "{text}"): the whole body, after a mention prefix, is the command.
    assert bot.command_text("MQA-1", bare=True) == "MQA-1" and bot.command_text("Bot: MQA-1", bare=True) == "MQA-1"


def test_where_the_answer_goes() -> None:
    threaded = _event(**{"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}})
    assert bot.reply_content("x", threaded, bot.Policy())["m.relates_to"] == {
        "rel_type": "m.thread", "event_id": "$root", "is_falling_back": True, "m.in_reply_to": {"event_id": "$e"}}
    assert bot.reply_content("x", threaded, bot.Policy(), bug="thread-top-level")["m.relates_to"] == {
        "m.in_reply_to": {"event_id": "$e"}}
    assert bot.reply_content("x", threaded, bot.Policy(), bug="thread-no-fallback")["m.relates_to"] == {
        "rel_type": "m.thread", "event_id": "$root"}
    assert "m.relates_to" not in bot.reply_content("x", _event(), bot.Policy(direct=True))
    assert bot.reply_content("x", _event(), bot.Policy(thread_replies="always"))["m.relates_to"]["event_id"] == "$e"


def test_a_room_policy_from_the_scenario_settings() -> None:
    settings = bot.Settings("http://hs", BOT, "t", "D", ("!a:hs", "!dm:hs"), Path("/s"), {
        "requireMention": True, "allowBots": "off", "knownBots": ["@k:hs"], "directRooms": ["!dm:hs"],
        "roomSettings": {"!a:hs": {"requireMention": False, "allowlist": ["@u:hs"], "allowBots": "all"}}})
    assert settings.policy("!a:hs") == bot.Policy(False, frozenset({"@u:hs"}), "all", frozenset({"@k:hs"}))
    assert settings.policy("!dm:hs").require_mention is False and settings.policy("!dm:hs").direct


def test_a_rate_limit_waits_as_told_and_a_refusal_is_final() -> None:
    assert bot.retry_delay_s(429, {"retry_after_ms": 700}, 0) == 0.7
    assert bot.retry_delay_s(502, {}, 9) == 2.0
    assert bot.retry_delay_s(403, {}, 0) is None
