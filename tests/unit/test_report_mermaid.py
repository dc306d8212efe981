"""Every Mermaid block of a report parses and draws in mermaid's own renderer (mermaid-cli in headless Chromium),
the wait lane included: for the issue's failing runs and for a 70-scenario run with lock pictures.

mermaid-cli is found by $MATRIX_QA_MMDC or `mmdc` on PATH, Chromium by $MATRIX_QA_CHROMIUM or
/usr/bin/chromium; without them these tests skip and say why. Set up (no browser download; offline after
the install): `PUPPETEER_SKIP_DOWNLOAD=1 npm install @mermaid-js/mermaid-cli` in a directory outside the repo,
`apt-get install chromium`, then MATRIX_QA_MMDC=<dir>/node_modules/.bin/mmdc.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qa.report.lock_evidence import analyze_lock_evidence
from qa.report.lock_timeline import tag_scenarios
from qa.report.markdown import render_markdown
from qa.report.summary import Failure, ScenarioResult, Summary
from tests.unit.test_lock_evidence import attempt_scope_turn, narrow_turn
from tests.unit.test_lock_waits import contention
from tests.unit.test_report_headline import fixture
from tests.unit.test_report_render import make_summary

MMDC_TIMEOUT_S = 180


def tools() -> tuple[str, str]:
    mmdc = os.environ.get("MATRIX_QA_MMDC") or shutil.which("mmdc")
    if not mmdc or not Path(mmdc).exists():
        pytest.skip("mermaid-cli not found: set MATRIX_QA_MMDC or put mmdc on PATH (see this file's docstring)")
    chromium = os.environ.get("MATRIX_QA_CHROMIUM") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium for mermaid-cli at {chromium}: set MATRIX_QA_CHROMIUM")
    return mmdc, chromium


def draw(markdown: str, tmp_path: Path) -> list[str]:
    """Every ```mermaid block of the markdown drawn by mermaid-cli; the SVGs' text. mmdc fails on a block that
    does not parse."""
    mmdc, chromium = tools()
    config = tmp_path / "puppeteer.json"
    config.write_text(json.dumps({"executablePath": chromium, "args": ["--no-sandbox"]}))
    (tmp_path / "report.md").write_text(markdown, encoding="utf-8")
    proc = subprocess.run([mmdc, "-p", str(config), "-i", "report.md", "-o", "drawn.md", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=MMDC_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    svgs = sorted(tmp_path.glob("drawn-*.svg"), key=lambda p: int(re.findall(r"\d+", p.name)[-1]))
    assert len(svgs) == markdown.count("```mermaid"), [p.name for p in svgs]
    return [p.read_text(encoding="utf-8") for p in svgs]


def seventy_with_locks() -> Summary:
    """70 scenarios, each with its lock turns: most narrow, a few legacy, one with the second writer's wait."""
    traces = {}
    for i in range(70):
        sid = f"scenario-{i:02d}"
        if i in (7, 41):
            traces[sid] = attempt_scope_turn(f"!room{i}:hs/main", f"att-{i}", i * 2000.0)
        elif i == 12:
            traces[sid] = [{**r, "t": r["t"] + i * 2000.0} for r in contention(f"!room{i}:hs/main")]
        else:
            traces[sid] = narrow_turn(f"!room{i}:hs/main", f"att-{i}", i * 2000.0)
    lock = analyze_lock_evidence([r for t in traces.values() for r in t]).model_dump(mode="json", by_alias=True)
    tag_scenarios(lock, traces)
    scenarios = [ScenarioResult(id=sid, title="t", status="fail" if sid == "scenario-12" else "pass",
                                failure=Failure(expected="lock.acquire with waitMs <= 25") if sid == "scenario-12"
                                else None) for sid in traces]
    return make_summary(scenarios, lock=lock)


def test_the_legacy_runs_charts_draw_with_the_wait_lane(tmp_path: Path) -> None:
    svgs = draw(render_markdown(fixture("legacy-scope")), tmp_path)
    assert len(svgs) == 2
    contention_chart = next(s for s in svgs if "matrix-session-lock-contention" in s)
    assert "waited 1.44 s" in contention_chart and "held during I/O 1.52 s" in contention_chart
    assert "turn 2" in contention_chart


def test_the_lock_only_runs_chart_draws(tmp_path: Path) -> None:
    (svg,) = draw(render_markdown(fixture("canary-legacy-scope")), tmp_path)
    assert "held during I/O 7.5 ms" in svg


def test_every_chart_of_a_70_scenario_report_draws(tmp_path: Path) -> None:
    md = render_markdown(seventy_with_locks())
    svgs = draw(md, tmp_path)
    assert len(svgs) >= 5  # three failing open, a few passing folded
    assert any("waited 1.45 s" in s for s in svgs)
