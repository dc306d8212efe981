"""Hot reload: what a reread config may change, what needs a restart, and the trace record either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qa.agent.config import AgentConfig
from qa.agent.reload import changed_fields, reload_once, reload_problem
from qa.kernel.trace import Trace


def _raw(**extra: Any) -> dict[str, Any]:
    return {"homeserver": "http://hs", "userId": "@bot:hs", "stateDir": "/s", "rooms": {"!r:hs": {}},
            "model": {"baseUrl": "http://m", "model": "x"}, **extra}


def _reload(tmp_path: Path, current: dict[str, Any], new: dict[str, Any] | str) -> tuple[AgentConfig, list[Any]]:
    path = tmp_path / "bot.json"
    path.write_text(new if isinstance(new, str) else json.dumps(new))
    trace = Trace(tmp_path / "trace.jsonl")
    result = reload_once(path, AgentConfig.model_validate(current), trace)
    trace.close()
    return result, [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]


def test_a_policy_change_is_applied_and_traced_with_its_generation(tmp_path: Path) -> None:
    new = _raw(rooms={"!r:hs": {"allowlist": ["@a:hs"]}}, configGeneration=2)
    config, records = _reload(tmp_path, _raw(), new)
    assert config.rooms["!r:hs"].allowlist == ["@a:hs"] and config.config_generation == 2
    assert records == [{**records[0], "type": "config.reload", "generation": 2, "ok": True,
                        "changed": ["rooms", "configGeneration"]}]


def test_what_needs_a_restart_is_refused_whole(tmp_path: Path) -> None:
    current = _raw()
    new = _raw(homeserver="http://elsewhere", rooms={"!r:hs": {"allowlist": []}}, configGeneration=2)
    config, records = _reload(tmp_path, current, new)
    assert config == AgentConfig.model_validate(current)
    assert (records[0]["ok"], records[0]["generation"]) == (False, 2)
    assert records[0]["error"] == "needs a restart to change: homeserver"
    assert reload_problem(AgentConfig.model_validate(current), AgentConfig.model_validate(current)) is None


def test_an_unreadable_config_keeps_the_running_one(tmp_path: Path) -> None:
    config, records = _reload(tmp_path, _raw(), "{not json")
    assert config == AgentConfig.model_validate(_raw())
    assert records[0]["ok"] is False and records[0]["generation"] is None and "not valid json" in records[0]["error"]


def test_stale_reload_policy_takes_the_generation_and_nothing_else(tmp_path: Path) -> None:
    current = _raw(staleReloadPolicy=True)
    config, records = _reload(tmp_path, current, _raw(staleReloadPolicy=True, configGeneration=3,
                                                      rooms={"!r:hs": {"allowlist": []}}))
    assert records[0]["ok"] is True and config.config_generation == 3
    assert config.rooms["!r:hs"].allowlist is None  # the bug: the old policy stays


def test_changed_fields_lists_aliases() -> None:
    a = AgentConfig.model_validate(_raw())
    b = AgentConfig.model_validate(_raw(autoJoin="always", knownBots=["@o:hs"]))
    assert changed_fields(a, b) == ["autoJoin", "knownBots"]
