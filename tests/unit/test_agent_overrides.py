"""`--bot-set` values checked against the bot's config model, each problem naming its key (qa.agent.overrides)."""

from __future__ import annotations

import pytest

from qa.agent.config import AgentConfig
from qa.agent.overrides import apply_override, representative_config, validate_agent_overrides


def test_the_representative_config_is_valid() -> None:
    AgentConfig.model_validate(representative_config())


@pytest.mark.parametrize(("key", "value"), [
    ("rooms.*.requireMention", False),
    ("rooms.*.allowBots", "mentions"),
    ("rooms.!specific:localhost.requireMention", False),
    ("session.writeLock.scope", "attempt"),
    ("session.writeLock.acquireTimeoutMs", 250),
    ("approvals.timeoutS", 0.5),
    ("approvals.allowedPrograms", ["echo"]),
    ("model.timeoutS", 30),
    ("forgetStateOnStart", True),
])
def test_valid_overrides_pass(key: str, value: object) -> None:
    assert validate_agent_overrides({key: value}) == []


@pytest.mark.parametrize(("key", "value", "fragments"), [
    ("rooms.*.requireMentions", False, ["unknown key", "known: requireMention, allowlist, allowBots"]),
    ("rooms.*.requireMention", "maybe", ["valid boolean", "'maybe'"]),
    ("rooms.*.allowBots", "some", ["'off', 'mentions' or 'all'"]),
    ("bogus", 1, ["unknown key", "forgetStateOnStart"]),
    ("approvals.timeoutz", 1, ["unknown key", "timeoutS"]),
    ("approvals.timeoutS", -1, ["greater than 0"]),
    ("model.timeoutS", "soon", ["valid number"]),
    ("knownBots", 3, ["valid list"]),
    ("model.model.x", 1, ["model.model is not a mapping"]),
    ("session.writeLock.scope", "wide", ["expected one of narrow|attempt"]),
    ("session.writeLock.staleMs", 0, ["milliseconds"]),
    ("session.writeLock.stale", 5, ["unknown setting"]),
    ("session.other", 5, ["unknown key session.other", "session.writeLock"]),
    ("rooms.*", False, ["cannot be the last part"]),
    ("a..b", 1, ["not a dotted key"]),
])
def test_bad_overrides_are_reported_by_key(key: str, value: object, fragments: list[str]) -> None:
    [problem] = validate_agent_overrides({key: value})
    assert problem.startswith(f"--bot-set {key}") or problem.startswith(f"--bot-set {key!r}")
    for fragment in fragments:
        assert fragment in problem


def test_one_problem_per_bad_key_in_the_order_given() -> None:
    problems = validate_agent_overrides({"encryption": "x" * 1000, "rooms.*.requireMention": True, "nope": 1})
    assert len(problems) == 2
    assert problems[0].startswith("--bot-set encryption:") and problems[1].startswith("--bot-set nope:")
    assert len(problems[0]) < 200, "a huge value is shortened, not echoed whole"


def test_a_star_sets_the_key_in_every_room() -> None:
    config = representative_config()
    assert apply_override(config, "rooms.*.requireMention", False) is None
    assert len(config["rooms"]) > 1
    assert all(room["requireMention"] is False for room in config["rooms"].values())
    assert "*" not in config["rooms"]


def test_a_run_without_bot_set_never_loads_the_agent_s_config_model() -> None:
    """The harness loads this module with the built-in bot file's checks (its env_check); the config model and
    the agent modules under it (~0.1 s of CPU) only when there are --bot-set values to judge (a fresh
    interpreter: this one has imported them)."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent("""
        import os, sys
        from qa.harness.botfile import builtin_bot_file, check_overrides, check_runnable
        bot = builtin_bot_file()
        check_overrides(bot, {})
        check_runnable(bot, dict(os.environ))
        print("qa.agent.overrides" in sys.modules, "qa.agent.config" in sys.modules)
        check_overrides(bot, {"model.timeoutS": 30})
        print("qa.agent.config" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.split() == ["True", "False", "True"], out.stdout + out.stderr
