"""Scenario features of issue 13 without a homeserver: per-room overrides and config changes as the bot's
template sees them, the rendered agent config, what the new steps need of a bot, and their load-time errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qa.agent.config import AgentConfig
from qa.harness.botfile import builtin_bot_file
from qa.harness.capabilities import needs
from qa.harness.launch import LaunchFacts, build_launch
from qa.kernel.errors import ConfigError
from qa.scenario.loader import load_scenarios
from qa.scenario.runner import bot_settings

IDS = {"driver": "@driver:hs", "observer": "@observer:hs"}


def _scenario(tmp_path: Path, body: str) -> Any:
    path = tmp_path / "s.yaml"
    path.write_text("id: s\ntitle: t\nprofiles: [transport]\nactors: [driver, observer]\n" + body)
    return load_scenarios([path])[0]


def _error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        _scenario(tmp_path, body)
    return str(info.value)


ROOMS = """\
bot: {allowlist: [driver, observer], autoJoin: allowlist, autoJoinAllowlist: [driver]}
rooms:
  main: {}
  side: {bot: {requireMention: false, allowlist: [observer]}}
  open: {bot: {allowlist: null}}
  later: {invite_bot: false}
"""


def test_room_overrides_beat_the_account_and_unset_fields_inherit(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, ROOMS + "steps:\n  - send: {as: driver, body: hi}\n")
    rooms = {"main": "!m", "side": "!s", "open": "!o"}  # `later` is not told to the bot
    got = bot_settings(scenario, IDS, rooms)
    assert got["rooms"] == {"!m": {}, "!s": {"requireMention": False, "allowlist": ["@observer:hs"]},
                            "!o": {"allowlist": None}}
    account = {"requireMention": True, "allowBots": "off", "allowlist": ["@driver:hs", "@observer:hs"]}
    assert got["roomSettings"] == {"!m": account, "!s": {**account, "requireMention": False,
                                                           "allowlist": ["@observer:hs"]},
                                   "!o": {**account, "allowlist": None}}
    assert (got["autoJoin"], got["autoJoinAllowlist"], got["directRooms"]) == ("allowlist", ["@driver:hs"], [])


def test_config_changes_apply_in_order_on_top_of_the_scenario(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, ROOMS + """\
steps:
  - set_bot_config: {bot: {allowlist: [driver]}, rooms: {side: {requireMention: true}}}
  - set_bot_config: {rooms: {main: {allowBots: mentions}}}
""")
    got = bot_settings(scenario, IDS, {"main": "!m", "side": "!s"}, scenario.steps)
    assert got["allowlist"] == ["@driver:hs"]
    assert got["roomSettings"]["!s"] == {"requireMention": True, "allowBots": "off", "allowlist": ["@observer:hs"]}
    assert got["roomSettings"]["!m"] == {"requireMention": True, "allowBots": "mentions", "allowlist": ["@driver:hs"]}
    # Only the first change: the second room keeps the scenario's own setting.
    first = bot_settings(scenario, IDS, {"main": "!m"}, scenario.steps[:1])
    assert first["roomSettings"]["!m"]["allowBots"] == "off"


def test_the_agent_renders_each_room_its_settings_and_the_generation(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, ROOMS + "steps:\n  - send: {as: driver, body: hi}\n")
    facts = LaunchFacts(
        homeserver_url="http://hs", server_name="hs", user_id="@bot:hs", password="pw", password_file=tmp_path / "p",
        access_token="t", device_id="D", rooms={"main": "!m", "side": "!s"}, actors=IDS, provider_base_url="http://m",
        provider_api_key="k", model="mock", scenario_id="s", scenario_title="t",
        bot=bot_settings(scenario, IDS, {"main": "!m", "side": "!s"}), encryption=False, state_dir=tmp_path / "bot",
        trace_file=tmp_path / "trace")
    config = AgentConfig.model_validate(json.loads(build_launch(builtin_bot_file(), facts, {}, {},
                                                                generation=3).config_text or ""))
    assert config.config_generation == 3 and config.auto_join == "allowlist"
    assert config.rooms["!s"].require_mention is False and config.rooms["!s"].allowlist == ["@observer:hs"]
    assert config.rooms["!m"].require_mention is True
    assert config.defaults.allowlist == ["@driver:hs", "@observer:hs"]


def test_membership_steps_and_settings_say_what_they_need(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, ROOMS + """\
steps:
  - invite: {as: driver, room: later}
  - kick: {as: driver, room: later, who: observer}
  - set_bot_config: {bot: {allowlist: [driver]}}
""")
    got = {n.capability: n.why for n in needs(scenario)}
    assert got == {"policy": "bot.allowlist", "membership": "bot.autoJoin", "hot-reload": "step 3 (set_bot_config)"}
    plain = _scenario(tmp_path, "rooms: {main: {}, x: {invite_bot: false}}\nsteps:\n  - invite: {as: driver, room: x}\n"
                                "  - kick: {as: driver, room: x}\n  - leave: {as: observer, room: x}\n")
    assert [(n.capability, n.why) for n in needs(plain)] == [("membership", "step 1 (invite)")]
    # Inviting a test user needs nothing of the bot.
    other = _scenario(tmp_path, "steps:\n  - invite: {as: driver, who: observer}\n")
    assert needs(other) == []


@pytest.mark.parametrize(("body", "fragments"), [
    ("rooms: {dm: {direct: true}}\nsteps:\n  - send: {as: driver, room: dm, body: hi}\n",
     ["s.yaml:5", "rooms.dm.direct", "exactly one member", "(has 2)"]),
    ("steps:\n  - set_bot_config: {}\n", ["s.yaml:6", "steps[0].set_bot_config", "changes nothing"]),
    ("steps:\n  - set_bot_config: {rooms: {nowhere: {requireMention: false}}}\n",
     ["steps[0].set_bot_config.rooms.nowhere", "unknown room 'nowhere'"]),
    ("steps:\n  - set_bot_config: {bot: {allowlist: [stranger]}}\n",
     ["steps[0].set_bot_config.bot.allowlist[0]", "unknown actor 'stranger'"]),
    ("rooms: {main: {bot: {allowlist: [stranger]}}}\nsteps:\n  - send: {as: driver, body: hi}\n",
     ["rooms.main.bot.allowlist[0]", "unknown actor 'stranger'"]),
    ("steps:\n  - invite: {as: driver, room: nowhere}\n", ["steps[0].invite.room", "unknown room 'nowhere'"]),
    ("steps:\n  - expect_membership: {membership: banned}\n", ["steps[0].expect_membership.membership"]),
    ("steps:\n  - kick: {as: bot}\n", ["steps[0].kick.as", "name a test actor"]),
    ("bot: {autoJoin: sometimes}\nsteps:\n  - send: {as: driver, body: hi}\n", ["bot.autoJoin"]),
    ("steps:\n  - set_m_direct: {as: bot, rooms: {driver: [nowhere]}}\n",
     ["s.yaml:6", "steps[0].set_m_direct.rooms.driver[0]", "unknown room 'nowhere'"]),
    ("steps:\n  - set_m_direct: {as: bot, rooms: {stranger: [main]}}\n",
     ["steps[0].set_m_direct.rooms.stranger", "unknown actor 'stranger'"]),
    ("steps:\n  - set_m_direct: {as: nobody, rooms: {driver: [main]}}\n",
     ["steps[0].set_m_direct.as", "unknown actor 'nobody'"]),
    ("steps:\n  - set_m_direct: {as: driver, rooms: {driver: [main]}}\n",
     ["steps[0].set_m_direct.rooms.driver", "cannot have a direct chat with itself"]),
    ("steps:\n  - set_m_direct: {as: bot, rooms: {driver: []}}\n",
     ["steps[0].set_m_direct.rooms.driver", "lists no room"]),
    ("steps:\n  - set_m_direct: {as: bot, rooms: {driver: main}}\n", ["steps[0].set_m_direct.rooms.driver"]),
    ("steps:\n  - set_m_direct: {as: bot}\n", ["steps[0].set_m_direct.rooms", "required"]),
    ("steps:\n  - expect_trace: {type: error, growing: retryInS}\n",
     ["s.yaml:6", "steps[0].expect_trace.growing", "give `at_least`"]),
    ("steps:\n  - expect_trace: {type: error, at_least: 1}\n",
     ["steps[0].expect_trace.at_least", "greater than or equal to 2"]),
    ("steps:\n  - expect_trace: {type: error, at_least: 2, growing: retry in s}\n",
     ["steps[0].expect_trace.growing"]),
    ("steps:\n  - expect_trace: {type: error, min: {retryInS: 6}, max: {retryInS: 5}}\n",
     ["s.yaml:6", "steps[0].expect_trace.min.retryInS", "min 6 is above max 5: no record could pass"]),
    ("steps:\n  - expect_trace: {type: error, min: {retryInS: soon}}\n", ["s.yaml:6", "steps[0].expect_trace.min"]),
])
def test_bad_membership_and_config_steps_name_file_line_and_field(tmp_path: Path, body: str,
                                                                  fragments: list[str]) -> None:
    message = _error(tmp_path, body)
    for fragment in fragments:
        assert fragment in message, message
