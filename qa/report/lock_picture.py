"""Writes each scenario's lock timeline SVG into its artifact directory and lists it in the scenario's record."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qa.report.lock_timeline import scenario_timelines
from qa.report.summary import ScenarioResult
from qa.report.svg import render_svg

SVG_NAME = "lock-timeline.svg"
ARTIFACT = "lock-timeline"


def write_lock_pictures(lock: Mapping[str, Any] | None, run_dir: Path, results: Sequence[ScenarioResult],
                        ran_as: Mapping[str, str]) -> list[Path]:
    """The paths written. A picture is an extra: one that cannot be written is left out, never the record."""
    by_id = {r.id: r for r in results}
    written = []
    for tl in scenario_timelines(lock):
        result = by_id.get(tl.scenario)
        if result is None:
            continue
        rel = Path("scenarios") / ran_as.get(tl.scenario, tl.scenario) / SVG_NAME
        with contextlib.suppress(OSError):
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_text(render_svg(tl), encoding="utf-8")
            result.artifacts[ARTIFACT] = rel.as_posix()
            written.append(run_dir / rel)
    return written
