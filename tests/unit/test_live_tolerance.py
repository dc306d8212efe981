"""Scenarios say how they fare against a live model; the runner honours it before starting anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qa.scenario.loader import load_scenario
from qa.scenario.runner import RunResources, run_scenario

REPO = Path(__file__).resolve().parents[2]


def resources(provider: Any) -> RunResources:
    # Nothing here may be touched when the scenario is skipped: a homeserver of None would blow up.
    return RunResources(homeserver=None, provider=provider, model_base_url="", model_name="", run_id="r",  # type: ignore[arg-type]
                        artifact_dir=Path("/nonexistent"), state_dir=Path("/nonexistent"), markers={}, bot_env={},
                        bot_overrides={}, secrets=[], probes=[], observed=[])


async def test_a_mock_only_scenario_is_skipped_on_a_live_model(tmp_path: Path) -> None:
    path = tmp_path / "mock-only.yaml"
    path.write_text("id: mock-only\ntitle: t\nprofiles: [fast]\nlive: {skip: true, tolerance: needs scripted replies}\n"
                    "steps:\n  - send: {as: driver, body: hi}\n")
    lines: list[str] = []
    result = await run_scenario(load_scenario(path), resources(None), lines.append)
    assert result.status == "skip"
    assert result.details == "skipped on a live model: needs scripted replies"
    assert lines == ["  - mock-only skipped on a live model: needs scripted replies"]


def test_approval_scenarios_state_their_live_tolerance() -> None:
    for name in ("matrix-approval-exec-metadata-single-event", "matrix-approval-exec-deny"):
        scenario = load_scenario(REPO / "scenarios" / f"{name}.yaml")
        assert scenario.live.tolerance and "exec" in scenario.live.tolerance
        assert not scenario.live.skip
