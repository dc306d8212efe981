"""Where a fork server's preload looks (qa.harness.preload): the bot's working directory for the run first, as
the bot's own `python -m` would; and the check before anything starts that names an entry found nowhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from qa.harness.botfile import BotFile, load_bot_file
from qa.harness.preload import check_preload, preload_dir, unfound
from qa.kernel.errors import ConfigError


def test_the_preload_looks_in_the_bots_working_directory_when_the_run_knows_it(tmp_path: Path) -> None:
    assert preload_dir(None, tmp_path) == tmp_path.resolve()
    assert preload_dir("sub", tmp_path) == (tmp_path / "sub").resolve()
    assert preload_dir("{bot_dir}/sub", tmp_path) == (tmp_path / "sub").resolve()
    assert preload_dir("/abs/where", tmp_path) == Path("/abs/where")
    # A scenario's directory is not known when the fork server imports: installed packages only, then.
    assert preload_dir("{state_dir}", tmp_path) is None
    assert preload_dir("{bot_dir}/{scenario}", tmp_path) is None


def test_a_module_beside_the_bot_file_is_found_there_and_only_there(tmp_path: Path) -> None:
    (tmp_path / "besidemod_q.py").write_text("raise SystemExit('never imported by the check')\n")
    entries = ["besidemod_q:warm_up", "json", "sys", "os.path", "nosuchmod_q", "nosuchmod_q.sub:f"]
    assert unfound(entries, tmp_path) == ["nosuchmod_q", "nosuchmod_q.sub:f"]
    assert unfound(entries, None) == ["besidemod_q:warm_up", "nosuchmod_q", "nosuchmod_q.sub:f"]
    assert "besidemod_q" not in sys.modules, "the check imports nothing"


def test_check_preload_names_the_bot_file_and_the_entry(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text('name: b\ncommand: ["{python}", "-m", "mybot_q"]\n'
                                       'fork_server: {preload: [json, "mybot_q:warm_up"]}\n')
    bot = load_bot_file(tmp_path / "bot.yaml")
    with pytest.raises(ConfigError) as caught:
        check_preload(bot)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'bot.yaml'}: fork_server.preload: 'mybot_q:warm_up': no module "
                              f"'mybot_q' in the bot's folder {tmp_path.resolve()}"), message
    assert "\n" not in message
    (tmp_path / "mybot_q.py").write_text("def warm_up():\n    pass\n")
    check_preload(bot)  # beside the bot file: found


def test_with_a_scenario_dependent_cwd_the_message_says_only_installed_packages_are_seen(tmp_path: Path) -> None:
    (tmp_path / "mybot_q.py").write_text("")
    bot = BotFile(name="b", command=["{python}", "-m", "mybot_q"], cwd="{state_dir}",
                  fork_server={"preload": ["mybot_q"]})
    with pytest.raises(ConfigError, match="depends on the scenario"):
        check_preload(bot)
    check_preload(BotFile(name="b", command=["{python}", "-m", "json.tool"]))  # no fork server: nothing to check
