"""The foreign test bot's pure decisions: what counts as a mention, what it answers, the shape of its reply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.lazy_module import LazyModule

# Imported by the first test that runs, not at collection (tests/lazy_module.py).
bot = LazyModule("tests.bots.nio_reply_bot")


BOT = "@bot:localhost"


def message(body: str, *, sender: str = "@alice:localhost", msgtype: str = "m.text", **extra: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "event_id": "$e",
            "content": {"msgtype": msgtype, "body": body, **extra}}


def test_mention_needs_the_bot_in_m_mentions_when_the_client_sends_them() -> None:
    assert bot.is_mention({"body": "hi", "m.mentions": {"user_ids": [BOT]}}, BOT)
    # The id typed into the body does not count once the client has said whom it meant.
    assert not bot.is_mention({"body": f"{BOT} hi", "m.mentions": {}}, BOT)
    assert not bot.is_mention({"body": f"{BOT} hi", "m.mentions": {"user_ids": ["@carol:localhost"]}}, BOT)
    # Legacy clients: no m.mentions at all, so the full id in the body is the mention.
    assert bot.is_mention({"body": f"{BOT}: hi"}, BOT)
    assert not bot.is_mention({"body": "bot: hi"}, BOT)


def test_what_the_bot_answers() -> None:
    mentioned = {"m.mentions": {"user_ids": [BOT]}}
    assert bot.should_answer(message(f"{BOT} hi", **mentioned), BOT)
    assert not bot.should_answer(message("hi", **{"m.mentions": {}}), BOT)
    assert not bot.should_answer(message("hi", msgtype="m.notice", **mentioned), BOT)
    assert not bot.should_answer(message("hi", sender=BOT, **mentioned), BOT)
    edit = {**mentioned, "m.relates_to": {"rel_type": "m.replace", "event_id": "$old"}}
    assert not bot.should_answer(message("hi", **edit), BOT)
    assert not bot.should_answer({**message("hi", **mentioned), "type": "m.reaction"}, BOT)
    # The answer-unmentioned bug drops only the mention gate; its own messages stay unanswered (no loop).
    assert bot.should_answer(message("hi", **{"m.mentions": {}}), BOT, require_mention=False)
    assert not bot.should_answer(message("hi", sender=BOT), BOT, require_mention=False)
    # --answer-all (the peer bot): another bot's unmentioned reply is answered like a person's.
    other_bot = {"m.mentions": {}, "m.relates_to": {"m.in_reply_to": {"event_id": "$mine"}}}
    assert bot.should_answer(message("MQA-1", sender="@agent:localhost", **other_bot), BOT, require_mention=False)


def test_reply_shapes() -> None:
    top = bot.reply_content("ok", "$t", None)
    assert top == {"msgtype": "m.text", "body": "ok", "m.mentions": {},
                   "m.relates_to": {"m.in_reply_to": {"event_id": "$t"}}}
    threaded = bot.reply_content("ok", "$t", "$root")
    assert threaded["m.relates_to"] == {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True,
                                        "m.in_reply_to": {"event_id": "$t"}}
    # The thread-top-level bug: the same trigger answered outside its thread.
    assert bot.reply_content("ok", "$t", "$root", thread=False)["m.relates_to"] == {"m.in_reply_to": {"event_id": "$t"}}
    assert bot.reply_content("failed", "$t", None, msgtype="m.notice")["msgtype"] == "m.notice"


def test_thread_root_and_sessions_stay_apart(tmp_path: Path) -> None:
    assert bot.thread_root({"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}) == "$root"
    assert bot.thread_root({"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}) is None
    files = {bot.session_file(tmp_path, room, root)
             for room, root in [("!a:x", None), ("!a:x", "$r"), ("!b:x", None), ("!b:x", "$r")]}
    assert len(files) == 4
    assert bot.session_file(tmp_path, "!a:x", "$r") == bot.session_file(tmp_path, "!a:x", "$r")


def test_settings_from_env(tmp_path: Path) -> None:
    env = {"MATRIX_QA_HOMESERVER_URL": "http://127.0.0.1:8008", "MATRIX_QA_USER_ID": BOT,
           "MATRIX_QA_PASSWORD": "pw", "MATRIX_QA_ROOM_IDS": "!a:x, !b:x,", "MATRIX_QA_STATE_DIR": str(tmp_path),
           "MATRIX_QA_MODEL": "m"}
    settings = bot.settings_from_env(env)
    assert settings.rooms == ("!a:x", "!b:x")
    assert settings.access_token == "" and settings.password == "pw"
    with pytest.raises(bot.ConfigError, match="MATRIX_QA_MODEL"):
        bot.settings_from_env({**env, "MATRIX_QA_MODEL": ""})
    with pytest.raises(bot.ConfigError, match="MATRIX_QA_ACCESS_TOKEN"):
        bot.settings_from_env({**env, "MATRIX_QA_PASSWORD": ""})
    with pytest.raises(bot.ConfigError, match="not a room id: '#alias:x'"):
        bot.settings_from_env({**env, "MATRIX_QA_ROOM_IDS": "#alias:x"})
