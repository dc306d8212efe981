"""The peer bot (issue 27): a second bot process beside the bot under test. Which peer bot files a run refuses
(qa.harness.peer), the scenario's `peer_bot:` and the step that judges it, a scenario without its peer skipped
(never passed), the flag and its config key, and the peer's own launch. The exchange's count: test_exchange.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.cli_run import _file_keys, _standalone
from qa.harness.botfile import builtin_bot_file, load_bot_file
from qa.harness.peer import FLAG, NOT_FOR_A_PEER, needs_peer_reason, peer_died, peer_problems
from qa.kernel.errors import ConfigError
from qa.run.options import RunOptions, checked_peer_file
from qa.scenario.loader import ScenarioErrors, load_scenario

REPO = Path(__file__).resolve().parents[2]
PEER_FILE = REPO / "tests" / "bots" / "nio-reply-bot-peer.yaml"
PEER, PERSON, ROOM = "@peer:hs", "@driver:hs", "!r:hs"


# --- which peer bot files a run refuses ------------------------------------------------------------------------


def _peer(**fields: Any) -> Any:
    values = {"source": "/x/peer.yaml", "say": None, **dict.fromkeys(NOT_FOR_A_PEER)}
    values.update(fields)
    return SimpleNamespace(**values)


def test_a_plain_peer_file_is_accepted() -> None:
    assert peer_problems(_peer(), Path("/x/bot.yaml")) == []
    assert peer_problems(_peer(), None) == []  # the embedded agent under test: any file may be the peer


def test_the_bot_under_tests_own_file_is_refused_naming_the_flag_and_the_file(tmp_path: Path) -> None:
    bot = tmp_path / "bot.yaml"
    bot.write_text("x")
    (problem,) = peer_problems(_peer(source=str(tmp_path / "." / "bot.yaml")), bot)
    assert problem.startswith(f"{FLAG} {tmp_path / '.' / 'bot.yaml'}: ")
    assert "is the bot under test's own file (--bot)" in problem
    assert peer_problems(_peer(source=str(tmp_path / "other.yaml")), bot) == []


def test_the_reasons_a_reader_sees_word_for_word(tmp_path: Path) -> None:
    assert NOT_FOR_A_PEER == {
        "accounts": "the harness registers one account for a peer",
        "registration": "a peer gets no registration rights",
        "state_mutations": "no step changes a peer's state",
        "lock_probe": "lock evidence is the bot under test's",
    }
    bot = tmp_path / "bot.yaml"
    assert peer_problems(_peer(source=str(bot)), bot) == [
        f"--peer-bot {bot}: is the bot under test's own file (--bot); a peer must be another bot, or a copy's loop "
        "guard would hide the bot under test's"]
    assert needs_peer_reason("p", False) == ("skipped: needs a peer bot as 'p' (a second bot process; run with "
                                             "--peer-bot FILE, or peer-bot in the config file)")


def test_a_symlink_to_the_bots_file_is_the_same_file_and_a_loop_is_no_error(tmp_path: Path) -> None:
    bot = tmp_path / "bot.yaml"
    bot.write_text("x")
    (tmp_path / "link.yaml").symlink_to(bot)
    assert peer_problems(_peer(source=str(tmp_path / "link.yaml")), bot) != []
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    assert peer_problems(_peer(source=str(tmp_path / "loop.yaml")), bot) == []


@pytest.mark.parametrize("field", sorted(NOT_FOR_A_PEER))
def test_what_a_peer_cannot_have_is_refused_naming_the_field(field: str) -> None:
    (problem,) = peer_problems(_peer(**{field: ["something"]}), None)
    assert problem == f"{FLAG} /x/peer.yaml: {field}: not for a peer bot ({NOT_FOR_A_PEER[field]})"


def test_say_is_refused_and_every_problem_is_its_own_line() -> None:
    problems = peer_problems(_peer(say="!echo {text}", accounts=["a"]), None)
    assert problems == [f"{FLAG} /x/peer.yaml: accounts: not for a peer bot ({NOT_FOR_A_PEER['accounts']})",
                        f"{FLAG} /x/peer.yaml: say: not for a peer bot (a peer answers by its own lights)"]


def test_the_repositorys_peer_loads_and_a_missing_file_names_the_flag(tmp_path: Path) -> None:
    peer = checked_peer_file(RunOptions(peer_bot_file=PEER_FILE))
    assert peer is not None and peer.name == "nio-reply-bot-peer" and "--answer-all" in peer.command
    assert checked_peer_file(RunOptions()) is None
    with pytest.raises(ConfigError, match=rf"^--peer-bot: {tmp_path}/nope.yaml: cannot read bot file"):
        checked_peer_file(RunOptions(peer_bot_file=tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="is the bot under test's own file"):
        checked_peer_file(RunOptions(peer_bot_file=PEER_FILE, bot_file=PEER_FILE))


def test_the_flag_is_a_run_flag_and_a_config_key() -> None:
    parser = _standalone()
    assert parser.parse_args(["--peer-bot", "p.yaml"]).peer_bot == Path("p.yaml")
    assert parser.parse_args([]).peer_bot is None
    assert "peer-bot" in _file_keys(parser)


def test_the_skip_reason_and_the_death_line() -> None:
    assert needs_peer_reason(None, False) is None
    assert needs_peer_reason("peer", True) is None
    reason = needs_peer_reason("peer", False)
    assert reason is not None and reason.startswith("skipped: needs a peer bot as 'peer'") and FLAG in reason
    assert peer_died("p", "exited with code 1", Path("/a/peer-bot.log")) == \
        "peer bot p: exited with code 1 unexpectedly (log: /a/peer-bot.log)"
    assert peer_died("p", None, Path("l")) == "peer bot p: exited unexpectedly (log: l)"


# --- the scenario's peer_bot: and the step that judges it -----------------------------------------------------

HEAD = """id: s
title: t
actors: [driver]
"""
STEPS = """steps:
  - send: {as: driver, body: a, id: a}
  - expect_exchange_stops: {after: a, max: 9}
"""


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return load_scenario(path)


def test_the_bot_settings_may_name_the_peer_and_the_step_defaults_its_quiet_window(tmp_path: Path) -> None:
    scenario = _load(tmp_path, HEAD + "peer_bot: peer\nbot: {knownBots: [peer], allowlist: [driver, peer]}\n"
                     + STEPS)
    step = scenario.steps[1]
    assert scenario.peer_bot == "peer" and scenario.bot.known_bots == ["peer"]
    assert (step.after, step.max, step.quiet, step.needs_peer) == ("a", 9, 3.0, True)
    assert ("policy", "step 2 (expect_exchange_stops)") in list(scenario.implied_needs())


@pytest.mark.parametrize(("extra", "message"), [
    ("peer_bot: bot\n", "'bot' is the bot under test; name the peer bot otherwise"),
    ("peer_bot: driver\n", "'driver' is a test user of this scenario"),
    ("", "this step judges the peer bot: the scenario needs `peer_bot: NAME`"),
    ("bot: {knownBots: [peer]}\n", "knownBots"),  # without peer_bot, `peer` is nobody
])
def test_a_bad_peer_bot_is_refused_with_file_line_and_field(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ScenarioErrors) as caught:
        _load(tmp_path, HEAD + extra + STEPS)
    assert message in str(caught.value) and "s.yaml:" in str(caught.value)


def test_the_step_needs_a_positive_bound(tmp_path: Path) -> None:
    with pytest.raises(ScenarioErrors, match="max"):
        _load(tmp_path, HEAD + "peer_bot: peer\n" + STEPS.replace("max: 9", "max: 0"))


def test_the_library_scenario_names_its_peer_and_is_skipped_without_one() -> None:
    from qa.scenario.runner import run_scenario

    scenario = load_scenario(REPO / "scenarios" / "matrix-bot-loop-guard-peer.yaml")
    assert scenario.peer_bot == "peer" and scenario.bot.known_bots == ["peer"]
    said: list[str] = []
    res = SimpleNamespace(provider=object(), bot_file=builtin_bot_file(), peer_bot=None)
    result = asyncio.run(run_scenario(scenario, res, said.append))  # type: ignore[arg-type]
    assert result.status == "skip" and result.details == needs_peer_reason("peer", False)
    assert said == [f"  - {scenario.id} {result.details}"]
    # With a peer it would run: the skip is for the missing peer alone.
    peer = load_bot_file(PEER_FILE)
    assert needs_peer_reason(scenario.peer_bot, peer is not None) is None


# --- the peer's launch: its own account and environment -------------------------------------------------------


def test_the_peers_launch_is_its_own_account_on_the_real_homeserver(tmp_path: Path, monkeypatch) -> None:
    from qa.scenario.peer import LOG_NAME, peer_launch

    monkeypatch.setenv("OPENAI_API_KEY", "the-users-own-key")  # a contract name: never inherited
    res = SimpleNamespace(
        homeserver=SimpleNamespace(base_url="http://hs:8008", server_name="hs"), model_base_url="http://m/v1",
        provider_api_key="mock-key", model_name="mock", provider_timeout_s=None, provider_max_retries=None,
        peer_bot=load_bot_file(PEER_FILE), secrets=[], fork_server=None,
        bot_env={"BOT_ONLY": "x"}, bot_overrides={"botLoopLimit": None})
    scenario = load_scenario(REPO / "scenarios" / "matrix-bot-loop-guard-peer.yaml")
    peer = peer_launch(res, scenario, SimpleNamespace(user_id=PEER), "peer-password", ("peer-token", "PEERDEV"),
                       {"main": ROOM}, {"driver": PERSON, "peer": PEER}, tmp_path, tmp_path / "artifacts")
    env = peer.launch.env
    assert (env["MATRIX_QA_USER_ID"], env["MATRIX_QA_ACCESS_TOKEN"], env["MATRIX_QA_DEVICE_ID"]) == \
        (PEER, "peer-token", "PEERDEV")
    assert env["MATRIX_QA_PASSWORD"] == "peer-password" and env["MATRIX_QA_ROOM_IDS"] == ROOM
    assert env["MATRIX_QA_HOMESERVER_URL"] == "http://hs:8008"  # never the bot's fault proxy
    assert env["MATRIX_QA_STATE_DIR"] == str(tmp_path / "peer") and env["OPENAI_API_KEY"] == "mock-key"
    assert "BOT_ONLY" not in env  # --bot-env is the bot under test's
    assert peer.launch.argv[-1] == "--answer-all" and peer.log_path == tmp_path / "artifacts" / LOG_NAME
    assert (tmp_path / "peer-password").stat().st_mode & 0o077 == 0


def test_validate_renders_a_template_with_the_peer_among_the_sample_actors() -> None:
    from qa.scenario.template_check import sample_facts

    facts = sample_facts(load_scenario(REPO / "scenarios" / "matrix-bot-loop-guard-peer.yaml"))
    assert facts.actors == {"driver": "@driver:localhost", "peer": "@peer:localhost"}
    assert facts.bot["knownBots"] == ["@peer:localhost"]


def test_the_peers_account_can_be_no_test_users_nor_the_bots(tmp_path: Path) -> None:
    import re

    from qa.scenario.peer import ROLE, peer_roles

    assert re.fullmatch(r"[a-z][a-z0-9_]*", ROLE) is None and not ROLE.startswith("bot")  # actors; bot, bot.NAME
    scenario = _load(tmp_path, "id: s\ntitle: t\nactors: [driver, peer]\npeer_bot: other\n" + STEPS)
    assert peer_roles(scenario, SimpleNamespace(peer_bot=object())) == [ROLE]
    assert peer_roles(scenario, SimpleNamespace(peer_bot=None)) == []
    assert ROLE not in ["bot", *scenario.actors]
