"""`matrix-qa compare BASE HEAD`: verdict changes, new and vanished scenarios, timings beyond noise, exit 1 on a
regression (issue 31). The issue's runs: the same two scenarios with the narrow lock and with the legacy one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qa.report.compare import (
    NOISE,
    SCHEMA,
    Comparison,
    Delta,
    VerdictChange,
    beyond_noise,
    change_of,
    compare,
    main,
    render_compare_markdown,
)
from qa.report.summary import Latency, ScenarioResult, Summary
from tests.unit.test_report_headline import FIXTURES, fixture
from tests.unit.test_report_render import make_summary


def test_a_passing_and_a_failing_run_of_the_same_scenarios_exits_1_and_names_the_regression(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(FIXTURES / "narrow-scope.json"), str(FIXTURES / "legacy-scope.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("## ❌ matrix-qa compare: 2 scenarios regressed\n")
    assert "| `matrix-session-lock-contention` | ✅ pass | ❌ fail | regressed |" in out
    assert "| `canary` | ✅ pass | ❌ fail | regressed |" in out
    assert "| `matrix-session-lock-contention` | longest wait for the lock | 0.1 ms | 1.44 s | +1.44 s | ❌ worse |" \
        in out
    assert "**Lock evidence:** pass → fail" in out


def test_two_passing_runs_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "matrix-qa-summary.json").write_text((FIXTURES / "narrow-scope.json").read_text())
    assert main([str(run), str(FIXTURES / "narrow-scope.json")]) == 0  # a run's directory will do
    out = capsys.readouterr().out
    assert out.startswith("## ✅ matrix-qa compare: no regression\n")
    assert "Same scenarios, same verdicts, no timing beyond noise." in out


def test_the_way_back_is_a_fix_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIXTURES / "legacy-scope.json"), str(FIXTURES / "narrow-scope.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == SCHEMA and data["regressed"] is False and data["regressedScenarios"] == []
    assert {(c["scenario"], c["change"]) for c in data["verdictChanges"]} == {
        ("canary", "fixed"), ("matrix-session-lock-contention", "fixed")}
    assert data["lockVerdict"] == {"base": "fail", "head": "pass"}
    assert all(not d["regressed"] for d in data["deltas"])


def test_an_unreadable_summary_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(tmp_path / "nowhere.json"), str(FIXTURES / "narrow-scope.json")]) == 2
    assert "nowhere.json" in capsys.readouterr().err


def result(sid: str, status: str = "pass", p50: float | None = None) -> ScenarioResult:
    latency = Latency(p50Ms=p50, p95Ms=p50, count=1) if p50 is not None else None
    return ScenarioResult(id=sid, title="t", status=status, latency=latency)


def two(base: list[ScenarioResult], head: list[ScenarioResult]) -> Comparison:
    return compare(make_summary(base), make_summary(head))


@pytest.mark.parametrize(("base", "head", "change"), [
    ("pass", "fail", "regressed"), ("pass", "interrupted", "regressed"), ("skip", "fail", "regressed"),
    ("fail", "pass", "fixed"), ("interrupted", "pass", "fixed"), ("pass", "skip", "changed"),
    ("fail", "interrupted", "changed"), ("fail", "skip", "changed"), ("skip", "pass", "changed"),
])
def test_verdict_changes(base: str, head: str, change: str) -> None:
    assert change_of(base, head) == change


def test_new_and_vanished_scenarios() -> None:
    c = two([result("a"), result("gone")], [result("a"), result("new-ok"), result("new-bad", "fail")])
    assert c.new == [{"scenario": "new-ok", "verdict": "pass"}, {"scenario": "new-bad", "verdict": "fail"}]
    assert c.vanished == [{"scenario": "gone", "verdict": "pass"}]
    assert c.regressed_scenarios == ["new-bad"] and c.regressions == 1
    md = render_compare_markdown(c)
    assert "### New scenarios\n\n- `new-ok`: ✅ pass\n- `new-bad`: ❌ fail\n" in md
    assert "### Vanished scenarios\n\n- `gone`: ✅ pass\n" in md


def test_latency_beyond_noise_is_listed_within_noise_is_not() -> None:
    c = two([result("slow", p50=100.0), result("noisy", p50=100.0), result("faster", p50=900.0),
             result("absent", p50=100.0)],
            [result("slow", p50=400.0), result("noisy", p50=199.0), result("faster", p50=100.0), result("absent")])
    assert c.deltas == [Delta("slow", "replyLatencyP50Ms", 100.0, 400.0, 300.0, True),
                        Delta("faster", "replyLatencyP50Ms", 900.0, 100.0, -800.0, False)]
    assert c.regressed_scenarios == ["slow"]
    md = render_compare_markdown(c)
    assert "| `slow` | reply latency p50 | 100 ms | 400 ms | +300 ms | ❌ worse |" in md
    assert "| `faster` | reply latency p50 | 900 ms | 100 ms | −800 ms | ✅ better |" in md
    assert md.startswith("## ❌ matrix-qa compare: 1 scenario regressed\n")


@pytest.mark.parametrize(("metric", "base", "head", "beyond"), [
    ("replyLatencyP50Ms", 100.0, 349.0, False), ("replyLatencyP50Ms", 100.0, 350.0, True),
    ("replyLatencyP50Ms", 400.0, 799.0, False), ("replyLatencyP50Ms", 400.0, 800.0, True),
    ("replyLatencyP50Ms", 400.0, 0.0, True), ("longestWaitMs", 0.1, 50.0, False), ("longestWaitMs", 0.1, 50.2, True),
    ("heldDuringIoMs", 0.0, 0.9, False), ("heldDuringIoMs", 0.0, 1.0, True), ("longestHoldMs", 60.0, 120.0, True),
])
def test_noise(metric: str, base: float, head: float, beyond: bool) -> None:
    assert beyond_noise(metric, base, head) is beyond


def test_a_lock_verdict_that_fails_with_no_scenario_to_show_it_is_a_regression() -> None:
    base = make_summary([result("a")], lock={"verdict": "pass", "reasons": [], "turns": []})
    head = make_summary([result("a")], lock={"verdict": "fail", "reasons": ["leaked"], "turns": []})
    c = compare(base, head)
    assert c.lockVerdict == {"base": "pass", "head": "fail"} and c.regressions == 1
    assert render_compare_markdown(c).startswith("## ❌ matrix-qa compare: the lock evidence regressed\n")
    assert compare(head, base).regressions == 0
    # A run without lock evidence on one side is no change of the lock verdict.
    assert compare(make_summary([result("a")]), head).lockVerdict is None


def test_the_json_is_the_comparison() -> None:
    c = Comparison(base={"runId": "b"}, head={"runId": "h"},
                   verdictChanges=[VerdictChange("x", "pass", "fail", "regressed")])
    data = c.to_json_dict()
    assert data["regressed"] is True and data["regressedScenarios"] == ["x"]
    assert data["verdictChanges"] == [{"scenario": "x", "base": "pass", "head": "fail", "change": "regressed"}]
    assert set(NOISE) == {"replyLatencyP50Ms", "longestHoldMs", "longestWaitMs", "heldDuringIoMs"}


def test_every_summary_reads_back_from_its_json() -> None:
    for name in ("narrow-scope", "legacy-scope", "canary-legacy-scope"):
        assert isinstance(fixture(name), Summary)


def test_the_rules_as_a_reader_sees_them() -> None:
    import dataclasses

    assert SCHEMA == "matrix-qa.compare/v1"
    # Floors and shares, at their edges: hold 50 ms, wait 100 % of the smaller value, held during I/O 1 ms flat.
    assert not beyond_noise("longestHoldMs", 0.0, 49.9) and beyond_noise("longestHoldMs", 0.0, 50.0)
    assert not beyond_noise("longestWaitMs", 100.0, 199.0) and beyond_noise("longestWaitMs", 100.0, 200.0)
    assert beyond_noise("heldDuringIoMs", 100.0, 101.0)
    c = Comparison(base={"runId": "b", "status": "pass", "scenarios": 3},
                   head={"runId": "h", "status": "fail", "scenarios": 3},
                   verdictChanges=[VerdictChange("a", "skip", "interrupted", "regressed")],
                   deltas=[Delta("x", m, 0.0, 100.0, 100.0, True) for m in NOISE])
    md = render_compare_markdown(c)
    assert "| `a` | ⏭️ skip | ⏹️ interrupted | regressed |" in md
    for label in ("reply latency p50", "longest lock hold", "longest wait for the lock", "lock held during I/O"):
        assert f"| `x` | {label} | 0.0 ms | 100 ms | +100 ms | ❌ worse |" in md
    assert "lock held during I/O 1 ms." in md and "longest lock hold 50 ms or 100% of the smaller value" in md
    assert md.startswith("## ❌ matrix-qa compare: 2 scenarios regressed\n")
    data = c.to_json_dict()
    assert (data["new"], data["vanished"], data["lockVerdict"]) == ([], [], None)
    for frozen in (c.verdictChanges[0], c.deltas[0]):
        with pytest.raises(dataclasses.FrozenInstanceError):
            frozen.scenario = "y"  # type: ignore[misc]


NOISE_LINE = ("Noise (a smaller change is not listed): reply latency p50 250 ms or 100% of the smaller value; longest "
              "lock hold 50 ms or 100% of the smaller value; longest wait for the lock 50 ms or 100% of the smaller "
              "value; lock held during I/O 1 ms.\n")


def test_the_whole_markdown_of_a_comparison() -> None:
    c = Comparison(base={"runId": "b1", "status": "pass", "scenarios": 3, "lockVerdict": "pass"},
                   head={"runId": "h1", "status": "fail", "scenarios": 3, "lockVerdict": "fail"},
                   verdictChanges=[VerdictChange("a", "pass", "fail", "regressed"),
                                   VerdictChange("b", "odd", "pass", "changed")],
                   new=[{"scenario": "n", "verdict": "skip"}], vanished=[{"scenario": "v", "verdict": "pass"}],
                   deltas=[Delta("a", "heldDuringIoMs", 0.0, 1.0, 1.0, True)],
                   lockVerdict={"base": "pass", "head": "fail"})
    assert render_compare_markdown(c) == (
        "## ❌ matrix-qa compare: 1 scenario regressed\n\nBase `b1` (pass, 3 scenarios) → head `h1` (fail, 3 "
        "scenarios)\n\n**Lock evidence:** pass → fail\n\n### Verdicts that changed\n\n| Scenario | Base | Head | |\n"
        "|---|---|---|---|\n| `a` | ✅ pass | ❌ fail | regressed |\n| `b` | ❔ odd | ✅ pass | changed |\n\n"
        "### New scenarios\n\n- `n`: ⏭️ skip\n\n### Vanished scenarios\n\n- `v`: ✅ pass\n\n"
        "### Timings beyond noise\n\n| Scenario | Measure | Base | Head | Change | |\n|---|---|---:|---:|---:|---|\n"
        "| `a` | lock held during I/O | 0.0 ms | 1.0 ms | +1.0 ms | ❌ worse |\n\n" + NOISE_LINE)
    only_verdicts = Comparison(base=c.base, head=c.head, verdictChanges=c.verdictChanges[1:])
    assert render_compare_markdown(only_verdicts).endswith("| `b` | ❔ odd | ✅ pass | changed |\n\n" + NOISE_LINE)
    same = Comparison(base=c.base, head=c.base)
    assert render_compare_markdown(same) == (
        "## ✅ matrix-qa compare: no regression\n\nBase `b1` (pass, 3 scenarios) → head `b1` (pass, 3 scenarios)\n\n"
        "Same scenarios, same verdicts, no timing beyond noise.\n\n" + NOISE_LINE)


def test_deltas_keep_three_decimals_and_a_rise_of_one_millisecond_held_during_io_regresses() -> None:
    c = two([result("a", p50=100.0)], [result("a", p50=400.1234)])
    assert c.deltas[0].deltaMs == 300.123
    base = make_summary([result("s")], lock={"verdict": "pass", "reasons": [], "turns": [
        {"scenario": "s", "session": "!a", "attempt": "t", "overlapMs": 0.0}]})
    head = make_summary([result("s")], lock={"verdict": "pass", "reasons": [], "turns": [
        {"scenario": "s", "session": "!a", "attempt": "t", "overlapMs": 1.0}]})
    (delta,) = compare(base, head).deltas
    assert (delta.metric, delta.deltaMs, delta.regressed) == ("heldDuringIoMs", 1.0, True)


def test_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert usage.startswith("usage: matrix-qa compare [-h] [--json] base head")
    assert "What changed between two runs: verdicts, new and vanished scenarios, timings beyond noise. Exit 1" in \
        " ".join(usage.split())
    assert "the base run: its matrix-qa-summary.json or its directory" in usage
    assert "the run to judge: its matrix-qa-summary.json or its directory" in usage
    assert "print the comparison as JSON instead of markdown" in usage
    assert "Exit 1 when something regressed." in " ".join(usage.split())
    assert not re.search(r"\w(the base run|the run to judge|print the comparison)", usage)
    assert main([str(tmp_path / "none.json"), str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err == f"matrix-qa: {tmp_path / 'none.json'}: cannot read run summary: " \
                                      "No such file or directory\n"
    # JSON as written: two-space indent, text as it is.
    accented = tmp_path / "café.json"
    accented.write_text(json.dumps(make_summary([result("café")]).to_json_dict()))
    base = tmp_path / "base.json"
    base.write_text(json.dumps(make_summary([]).to_json_dict()))
    assert main([str(base), str(accented), "--json"]) == 0
    out = capsys.readouterr().out
    assert '\n  "schema": "matrix-qa.compare/v1",\n' in out and '"scenario": "café"' in out and out.endswith("}\n")
    assert main([str(base), str(accented)]) == 0
    assert capsys.readouterr().out.endswith(NOISE_LINE)  # one newline at the end, as the markdown has it
    monkeypatch.setattr(sys, "argv", ["matrix-qa compare", str(base), str(accented)])
    assert main() == 0
    capsys.readouterr()
    proc = subprocess.run([sys.executable, "-m", "qa.report.compare", str(base), str(FIXTURES / "legacy-scope.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "regressed" in proc.stdout
