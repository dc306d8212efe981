"""Scenario files as pytest items, and what a test is to the run: its scenario id, its bot file, the plan.

A scenario file is one item named by its scenario id, with its profiles as markers (`-m fast`, `-k canary`);
it runs through the same runner as `matrix-qa run`, and passes, fails and skips as it does there, with the
same text. A file that does not load is a collection error naming file:line:column and the field.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.pytest_plugin.failure import MatrixQAFailure, failure_text

IDS_KEY = pytest.StashKey[dict[str, str]]()
MAX_ID = 60


class ScenarioFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        from qa.kernel.errors import ConfigError
        from qa.scenario.loader import load_scenario

        try:
            scenario = load_scenario(self.path)
        except ConfigError as exc:
            raise self.CollectError(str(exc)) from None
        item = ScenarioItem.from_parent(self, name=scenario.id, scenario=scenario)
        for profile in scenario.profiles:
            self.config.addinivalue_line("markers", f"{profile}: matrix-qa scenario profile")
            item.add_marker(profile)
        return [item]


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario

    def runtest(self) -> None:
        from qa.pytest_plugin import qa_session

        session = qa_session(self.config, self.session.items)
        result = session.call(_run(session, self.scenario))
        if result.status == "skip":
            pytest.skip(result.details)
        if result.status != "pass":
            raise MatrixQAFailure(failure_text(result), result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, MatrixQAFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.name}"


async def _run(session: Any, scenario: Any) -> Any:
    from qa.scenario.runner import run_scenario

    result = await run_scenario(scenario, session.resources_for(scenario), session.say_for(scenario.id))
    return session.file_result(result)


# --- tests as scenarios ------------------------------------------------------------------------------------------


def scenario_id_of(node: pytest.Item) -> str:
    """A test's scenario id: its module and name as a scenario id ([a-z0-9-]), unique in the session."""
    if isinstance(node, ScenarioItem):
        return str(node.scenario.id)
    ids = node.config.stash.setdefault(IDS_KEY, {})
    if node.nodeid not in ids:
        slug = re.sub(r"[^a-z0-9]+", "-", f"{Path(str(node.path)).stem}-{node.name}".lower()).strip("-")[:MAX_ID]
        slug = slug or "test"
        if slug in ids.values():
            slug = f"{slug[:MAX_ID - 7]}-{hashlib.sha256(node.nodeid.encode()).hexdigest()[:6]}"
        ids[node.nodeid] = slug
    return ids[node.nodeid]


def plan_of(items: list[pytest.Item]) -> list[Any]:
    """What the session will run, as the run's plan: scenario items and the tests that use the fixture."""
    plan: list[Any] = []
    for item in items:
        if isinstance(item, ScenarioItem):
            plan.append(item.scenario)
        elif "matrix_qa" in getattr(item, "fixturenames", ()):
            plan.append(SimpleNamespace(id=scenario_id_of(item), title=item.nodeid,
                                        provider=SimpleNamespace(rules=[]), source_path=None))
    return plan


def bot_file_of(node: pytest.Item) -> Any:
    """The bot file a `matrix_qa(bot=FILE)` marker names (relative to the test's folder, else the working
    directory), checked as `--bot` is; None: the session's."""
    marker = node.get_closest_marker("matrix_qa")
    if marker is None or not marker.kwargs.get("bot"):
        return None
    from qa.harness.botfile import check_runnable, load_bot_file

    raw = Path(str(marker.kwargs["bot"]))
    near = Path(str(node.path)).parent / raw
    bot = load_bot_file(near if near.exists() else raw)
    check_runnable(bot, dict(os.environ))
    return bot
