"""The scenario settings (qa.scenario.settings) without servers: each `bot:` field's default, bounds and words,
the capability each implies, and the room, provider and live blocks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from qa.scenario.settings import (
    BotConfig,
    Compaction,
    LiveSpec,
    ProviderConfig,
    RoomOverride,
    RoomSpec,
    SessionLife,
    SessionWriteLock,
    bot_settings,
    uses_encryption,
)

# The bot's own defaults, written out: a scenario that says nothing gets exactly these.
DEFAULTS = {"requireMention": True, "allowBots": "off", "knownBots": [], "allowlist": None, "sessionWriteLock": None,
            "sessionLife": None, "textChunkLimit": 4000, "encryption": False, "streaming": "off", "toolProgress": "on",
            "mediaMaxBytes": 1_000_000, "roomKeys": "all", "autoJoin": "off", "autoJoinAllowlist": [],
            "dmRequireMention": False, "modelTimeout": None, "threadReplies": "inbound",
            "syncTimeout": None, "approvalTimeout": None, "decryptRetry": None}


def test_the_defaults_are_the_bots_own() -> None:
    assert BotConfig().model_dump(by_alias=True) == DEFAULTS
    assert RoomSpec().model_dump() == {"encrypted": False, "members": None, "direct": False, "invite_bot": True,
                                       "bot": None}
    assert RoomOverride().model_dump(by_alias=True) == {"requireMention": None, "allowBots": None, "allowlist": None}
    assert LiveSpec().model_dump() == {"tolerance": None, "skip": False}
    assert ProviderConfig().rules == []


# Each field a scenario may set to something other than the default, and what the bot then needs (and why).
IMPLIED = [
    ("requireMention", False, "policy", "bot.requireMention"), ("allowBots", "all", "policy", "bot.allowBots"),
    ("knownBots", ["a"], "policy", "bot.knownBots"), ("allowlist", [], "policy", "bot.allowlist"),
    ("sessionWriteLock", {}, "lock", "bot.sessionWriteLock"), ("sessionLife", {}, "lock", "bot.sessionLife"),
    ("encryption", True, "e2ee", "encrypted room"), ("streaming", "quiet", "streaming", "bot.streaming"),
    ("toolProgress", "off", "streaming", "bot.toolProgress"), ("mediaMaxBytes", 5, "media", "bot.mediaMaxBytes"),
    ("roomKeys", "verified", "verification", "bot.roomKeys"), ("autoJoin", "always", "membership", "bot.autoJoin"),
    ("autoJoinAllowlist", ["a"], "membership", "bot.autoJoin"),
    ("dmRequireMention", True, "policy", "bot.dmRequireMention"),
    ("threadReplies", "off", "policy", "bot.threadReplies"),
    ("approvalTimeout", "3s", "approvals", "bot.approvalTimeout"),
    ("decryptRetry", "3s", "e2ee", "bot.decryptRetry"),
    # Issue 28: a bot that does not take the launch's model timeout skips the scenario with the reason.
    ("modelTimeout", "5s", "model-timeout", "bot.modelTimeout"),
]


@pytest.mark.parametrize(("key", "value", "capability", "why"), IMPLIED, ids=[i[0] for i in IMPLIED])
def test_each_setting_needs_its_capability(key: str, value: Any, capability: str, why: str) -> None:
    assert list(BotConfig.model_validate({key: value}).needs()) == [(capability, why)]


@pytest.mark.parametrize(("key", "value"), [("textChunkLimit", 10)])
def test_settings_that_every_bot_takes_need_nothing(key: str, value: Any) -> None:
    assert list(BotConfig.model_validate({key: value}).needs()) == []


@pytest.mark.parametrize(("model", "data"), [
    (BotConfig, {"allowBots": "mentions"}), (BotConfig, {"allowBots": "all"}), (BotConfig, {"allowBots": "off"}),
    (BotConfig, {"streaming": "partial"}), (BotConfig, {"streaming": "quiet"}), (BotConfig, {"autoJoin": "always"}),
    (BotConfig, {"autoJoin": "allowlist"}), (BotConfig, {"threadReplies": "off"}),
    (BotConfig, {"threadReplies": "always"}), (BotConfig, {"roomKeys": "verified"}),
    (BotConfig, {"textChunkLimit": 1}), (BotConfig, {"mediaMaxBytes": 1}),
    (RoomOverride, {"allowBots": "all"}), (SessionWriteLock, {"scope": "narrow"}),
    (SessionWriteLock, {"scope": "attempt"}), (SessionWriteLock, {"acquireTimeoutMs": 1, "staleMs": 1, "maxHoldMs": 1}),
    (Compaction, {"maxRecords": 2, "keepRecords": 0, "maxBytes": 1, "summary": "model"}),
    (Compaction, {"summary": "local"}), (SessionLife, {"stallFirstReplyMs": 0}),
    (SessionLife, {"stallFirstReplyMs": 60_000}), (ProviderConfig, {"rules": ["a"]}), (LiveSpec, {"tolerance": "x"}),
])
def test_every_word_and_the_edge_of_every_bound_is_accepted(model: Any, data: dict[str, Any]) -> None:
    model.model_validate(data)


@pytest.mark.parametrize(("model", "data"), [
    (BotConfig, {"textChunkLimit": 0}), (BotConfig, {"mediaMaxBytes": 0}), (SessionWriteLock, {"staleMs": 0}),
    (SessionWriteLock, {"acquireTimeoutMs": 0}), (SessionWriteLock, {"maxHoldMs": 0}),
    (Compaction, {"maxRecords": 1}), (Compaction, {"keepRecords": -1}), (Compaction, {"maxBytes": 0}),
    (SessionLife, {"stallFirstReplyMs": -1}), (SessionLife, {"stallFirstReplyMs": 60_001}),
    (ProviderConfig, {"rules": [""]}), (LiveSpec, {"tolerance": ""}),
])
def test_past_the_edge_of_a_bound_is_an_error(model: Any, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_yaml_booleans_are_read_as_the_words_people_mean() -> None:
    assert BotConfig.model_validate({"allowBots": False}).allow_bots == "off"
    assert BotConfig.model_validate({"threadReplies": False}).thread_replies == "off"
    assert BotConfig.model_validate({"streaming": False}).streaming == "off"
    assert BotConfig.model_validate({"toolProgress": True}).tool_progress == "on"
    assert BotConfig.model_validate({"toolProgress": False}).tool_progress == "off"
    assert RoomOverride.model_validate({"allowBots": False}).allow_bots == "off"
    with pytest.raises(ValidationError) as caught:
        BotConfig.model_validate({"threadReplies": True})
    assert caught.value.errors()[0]["loc"] == ("threadReplies",)


@pytest.mark.parametrize("model", [BotConfig, RoomOverride])
def test_allow_bots_true_is_ambiguous(model: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"allowBots": True})
    error = caught.value.errors()[0]
    assert (error["type"], error["msg"]) == (
        "allow_bots", "allowBots is true/on/yes, which is ambiguous: write 'mentions' or 'all' (or off)")


@pytest.mark.parametrize("path", ["/etc/rules.yaml", "../rules.yaml", "fixtures/../../x.yaml"])
def test_rule_files_are_relative_to_the_repo_root(path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ProviderConfig.model_validate({"rules": [path]})
    error = caught.value.errors()[0]
    assert (error["type"], error["msg"]) == ("path", f"{path!r} must be relative to the repo root, without '..'")
    assert ProviderConfig.model_validate({"rules": ["fixtures/a..b.yaml"]}).rules == ["fixtures/a..b.yaml"]


def test_encryption_is_the_bots_setting_or_any_encrypted_room() -> None:
    def scenario(bot: bool, *rooms: bool) -> Any:
        return SimpleNamespace(bot=SimpleNamespace(encryption=bot), rooms={str(i): SimpleNamespace(encrypted=e)
                                                                             for i, e in enumerate(rooms)})

    assert uses_encryption(scenario(True, False)) and uses_encryption(scenario(False, False, True))
    assert not uses_encryption(scenario(False, False)) and not uses_encryption(scenario(False))


def test_a_nested_block_reaches_the_template_with_only_what_was_set() -> None:
    scenario = SimpleNamespace(bot=BotConfig.model_validate({"sessionWriteLock": {"scope": "narrow"}}),
                               rooms={"main": RoomSpec()})
    facts = bot_settings(scenario, {}, {"main": "!m"})
    assert facts["sessionWriteLock"] == {"scope": "narrow"} and facts["sessionLife"] == {}
    assert facts["rooms"] == {"!m": {}} and facts["encryption"] is False
