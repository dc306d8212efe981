"""The run's hooks for recording and replay (qa.provider.record_replay), with stand-in providers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.provider.record_replay import after_scenario, bind_scope, bot_key
from qa.provider.recorder import STAND_IN_KEY
from qa.report.summary import ScenarioResult
from qa.run import RunOptions
from qa.shared.markers import MarkerFactory
from qa.shared.replay_miss import Miss


@dataclass
class Live:
    api_key: str = "sk-live-0123456789abcdef"


@dataclass
class Resources:
    provider: Any
    markers: Any
    model_base_url: str = "unset"


@dataclass
class Recorder:
    bound: dict[str, Any] = field(default_factory=dict)
    finished: list[tuple[str, str | None]] = field(default_factory=list)

    def bind_scope(self, scope: str, values: Any) -> None:
        self.bound[scope] = values

    def scoped_base_url(self, scope: str) -> str:
        return f"http://proxy/scope/{scope}/v1"

    def finish_scope(self, scope: str, status: str | None) -> Path | None:
        self.finished.append((scope, status))
        return None if status is None else Path(f"{scope}.yaml")


@dataclass
class Replayer:
    directory: Path = Path("fixtures/cassettes")
    model: str = "m"
    have: tuple[str, ...] = ("s",)
    missed: bool = True

    def bind_scope(self, scope: str, values: Any) -> None:
        assert scope in self.have

    def skip_reason(self, scope: str) -> str | None:
        return None if scope in self.have else "skipped: no cassette"

    def misses(self, scope: str) -> list[Miss]:
        return [Miss({}, None, ["(the cassette holds no exchanges)"])] if self.missed else []

    def problems(self, scope: str) -> list[str]:
        return []

    def unused(self, scope: str) -> int:
        return 2


def test_the_bot_never_holds_the_live_key_while_recording() -> None:
    assert bot_key(Live(), RunOptions(provider="live", record_dir=Path("c"))) == STAND_IN_KEY
    assert bot_key(Live(), RunOptions(provider="live")) == Live().api_key
    assert bot_key(None, RunOptions(provider="replay")) == "mock-key"


def test_a_recording_bot_gets_its_scope_of_the_proxy() -> None:
    recorder = Recorder()
    markers = MarkerFactory("seed").child("s")
    own = bind_scope(recorder, "s", Resources(provider=None, markers=markers), "run-abcdef")
    assert own.model_base_url == "http://proxy/scope/s/v1"
    assert recorder.bound["s"]["token"] == markers["token"] and recorder.bound["s"]["run"] == "abcdef"


def test_a_scenario_without_a_cassette_is_not_bound() -> None:
    resources = Resources(provider="view", markers=MarkerFactory("x"))
    assert bind_scope(Replayer(), "other", resources, "r") is resources


def test_a_skipped_scenario_leaves_no_cassette() -> None:
    recorder, said = Recorder(), []
    after_scenario(recorder, "s", ScenarioResult(id="s", title="t", status="skip"), said.append)
    after_scenario(recorder, "f", ScenarioResult(id="f", title="t", status="fail"), said.append)
    assert recorder.finished == [("s", None), ("f", "fail")]
    assert said == ["  recorded f.yaml (status fail: look before committing it)"]


def test_a_replay_miss_fails_the_scenario_with_the_rerecord_command() -> None:
    result = ScenarioResult(id="s", title="t", status="pass")
    after_scenario(Replayer(), "s", result, print)
    assert result.status == "fail" and result.failure is not None
    assert any("--record fixtures/cassettes --scenario s" in h for h in result.failure.hints)
    assert "never asked for" not in result.details  # a miss leaves exchanges unused: no news


def test_a_replay_that_asked_less_says_so_and_still_passes() -> None:
    result = ScenarioResult(id="s", title="t", status="pass", details="2 steps passed")
    after_scenario(Replayer(missed=False), "s", result, print)
    assert result.status == "pass"
    assert result.details == "2 steps passed; replay: 2 recorded exchange(s) never asked for"
