"""Where a fork server's preload looks (qa.harness.preload): the bot's working directory for the run first, as
the bot's own `python -m` would; and the check before anything starts that names an entry found nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa.harness import botfile, preload
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
    assert unfound(entries, tmp_path, {}) == ["nosuchmod_q", "nosuchmod_q.sub:f"]
    assert unfound(entries, None, {}) == ["besidemod_q:warm_up", "nosuchmod_q", "nosuchmod_q.sub:f"]
    assert "besidemod_q" not in sys.modules, "the check imports nothing"


def test_check_preload_names_the_bot_file_and_the_entry(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text('name: b\ncommand: ["{python}", "-m", "mybot_q"]\n'
                                       'fork_server: {preload: ["mybot_q:warm_up", json]}\n')
    bot = load_bot_file(tmp_path / "bot.yaml")
    with pytest.raises(ConfigError) as caught:
        check_preload(bot, {})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'bot.yaml'}: fork_server.preload: 'mybot_q:warm_up': no module "
                              f"'mybot_q' in the bot's folder {tmp_path.resolve()}"), message
    assert "\n" not in message
    (tmp_path / "mybot_q.py").write_text("def warm_up():\n    pass\n")
    check_preload(bot, {})  # beside the bot file: found


def test_with_a_scenario_dependent_cwd_the_message_says_only_installed_packages_are_seen(tmp_path: Path) -> None:
    (tmp_path / "mybot_q.py").write_text("")
    bot = BotFile(name="b", command=["{python}", "-m", "mybot_q"], cwd="{state_dir}",
                  fork_server={"preload": ["mybot_q"]})
    with pytest.raises(ConfigError, match="depends on the scenario"):
        check_preload(bot, {})
    check_preload(BotFile(name="b", command=["{python}", "-m", "json.tool"]))  # no fork server: nothing to check


def _vendoring_bot(tmp_path: Path, preload: str) -> BotFile:
    """A package whose import puts ../vendor on sys.path, as a bot vendoring its dependencies does."""
    (tmp_path / "bots" / "mybot_v").mkdir(parents=True)
    (tmp_path / "bots" / "mybot_v" / "__init__.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'vendor'))\n")
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "vendored_q.py").write_text("")
    (tmp_path / "bots" / "bot.yaml").write_text('name: v\ncommand: ["{python}", "-m", "mybot_v"]\n'
                                                f"fork_server: {{preload: {preload}}}\n")
    return load_bot_file(tmp_path / "bots" / "bot.yaml")


def test_an_entry_found_only_after_an_earlier_one_ran_is_not_refused_before_the_run(tmp_path: Path) -> None:
    """The fork server imports the entries in order: mybot_v's import makes vendored_q importable, so the check
    before anything starts looks at the first entry only (nothing ran before it) and leaves the rest to the fork
    server's own exit 2 (tests/integration/test_fork_server.py preloads this very pair)."""
    check_preload(_vendoring_bot(tmp_path, "[mybot_v, vendored_q]"), {})  # was: ConfigError 'vendored_q'
    assert "mybot_v" not in sys.modules and "vendored_q" not in sys.modules, "the check imports nothing"
    # The first entry is still checked: nothing ran before it, so the fork server could not find it either.
    with pytest.raises(ConfigError, match="'vendored_q': no module 'vendored_q' in the bot's folder"):
        check_preload(_vendoring_bot(tmp_path / "again", "[vendored_q, mybot_v]"), {})


def test_whether_the_bots_folder_is_searched_is_the_fork_servers_environment_not_our_flags(tmp_path: Path) -> None:
    """The fork server is a plain `python -m`: PYTHONSAFEPATH in the environment it gets keeps the bot's folder off
    its path, and a harness started with -P (or -I) does not."""
    (tmp_path / "besidemod_q.py").write_text("")
    assert unfound(["besidemod_q"], tmp_path, {"PYTHONSAFEPATH": "1"}) == ["besidemod_q"]
    assert unfound(["besidemod_q"], tmp_path, {"PYTHONSAFEPATH": ""}) == []  # empty: not set, as Python reads it
    bot = BotFile(name="b", command=["{python}", "-m", "besidemod_q"], fork_server={"preload": ["besidemod_q"]})
    bot._dir = tmp_path
    with pytest.raises(ConfigError, match="PYTHONSAFEPATH keeps off the preload's path"):
        check_preload(bot, {"PYTHONSAFEPATH": "1"})
    # A harness run with -P: the fork server it starts still puts the bot's folder first.
    root = Path(preload.__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"} | {"PYTHONPATH": str(root)}
    code = ("import sys, pathlib; from qa.harness.preload import unfound; assert sys.flags.safe_path; "
            f"print(unfound(['besidemod_q'], pathlib.Path({str(tmp_path)!r}), {{}}))")
    out = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout == "[]\n", out.stdout + out.stderr


def test_a_brace_that_is_no_placeholder_is_part_of_the_path(tmp_path: Path) -> None:
    """Only the bot file's own placeholders (botfile._PLACEHOLDER_RE: {name}) make the directory a scenario's; a
    brace in the bot's folder's name or in a cwd that is no placeholder is a path, as launch.fill leaves it."""
    assert preload._PLACEHOLDER_RE.pattern == botfile._PLACEHOLDER_RE.pattern
    braced = tmp_path / "team{1}"
    assert preload_dir(None, braced) == braced.resolve()
    assert preload_dir("{bot_dir}/sub", braced) == (braced / "sub").resolve()
    assert preload_dir("odd{dir", tmp_path) == (tmp_path / "odd{dir").resolve()
    assert preload_dir("{bot_dir}/{state_dir}", braced) is None
