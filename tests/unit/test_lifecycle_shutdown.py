"""qa.run.lifecycle.Lifecycle.shutdown: the run's components stop side by side, each within its own deadline, and
the last-resort sweep runs after them whatever happened."""

from __future__ import annotations

import asyncio
import io

import pytest

from qa.harness.output import Output
from qa.run import lifecycle
from qa.run.lifecycle import Lifecycle


class Component:
    """Its stop begins, then waits until every other component's stop has begun too: stopped one after the other,
    the first one's stop would wait out its deadline."""

    def __init__(self, began: dict[str, asyncio.Event], name: str, fail: bool = False) -> None:
        self.began, self.name, self.fail = began, name, fail
        self.stopped = False

    async def stop(self) -> None:
        self.began[self.name].set()
        for event in self.began.values():
            await event.wait()
        if self.fail:
            raise RuntimeError("would not stop")
        self.stopped = True


@pytest.fixture
def swept(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(lifecycle, "kill_all_bots", lambda: calls.append("bots"))
    monkeypatch.setattr(lifecycle, "kill_everything", lambda: calls.append("everything"))
    monkeypatch.setattr(lifecycle, "SHUTDOWN_TIMEOUT_S", 5.0)
    return calls


async def _shutdown(*names: str, failing: str = "") -> tuple[list[Component], str]:
    began = {name: asyncio.Event() for name in names}
    components = [Component(began, name, fail=name == failing) for name in names]
    said = io.StringIO()
    await Lifecycle(Output(said), [], lambda: None).shutdown(components[0], None, *components[1:])
    return components, said.getvalue()


def test_components_stop_side_by_side(swept: list[str]) -> None:
    components, said = asyncio.run(_shutdown("homeserver", "provider", "fork server"))
    assert all(c.stopped for c in components)
    assert "warning" not in said  # none waited out its deadline for another
    assert swept == ["bots", "everything"]


def test_a_failed_stop_is_said_and_the_others_still_stop(swept: list[str]) -> None:
    components, said = asyncio.run(_shutdown("homeserver", "fork server", failing="homeserver"))
    assert [c.stopped for c in components] == [False, True]
    assert "warning: stopping Component failed: RuntimeError would not stop" in said
    assert swept == ["bots", "everything"]
