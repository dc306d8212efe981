"""The report for people who would rather look than read: long tables fold, lock timelines are drawn."""

from __future__ import annotations

import re

from qa.report.ci_summary import PASSING_PICTURES_START, drop_passing_pictures, render_ci_summary
from qa.report.lock_evidence import analyze_lock_evidence
from qa.report.lock_timeline import tag_scenarios
from qa.report.markdown import OPEN_ROWS, fence_states, render_markdown
from qa.report.summary import Failure, ScenarioResult, Summary
from tests.unit.test_lock_evidence import attempt_scope_turn, narrow_turn
from tests.unit.test_report_render import assert_tables_well_formed, make_summary

SCREEN_LINES = 45  # what a reader sees before scrolling, give or take


def big_run(n: int = 70, failing: tuple[int, ...] = (7, 41)) -> Summary:
    scenarios = []
    for i in range(n):
        if i in failing:
            scenarios.append(ScenarioResult(id=f"scenario-{i:02d}", title=f"t{i}", status="fail", durationMs=900.0,
                                            details="no reply", failure=Failure(expected="a reply", seen=["x"])))
        else:
            scenarios.append(ScenarioResult(id=f"scenario-{i:02d}", title=f"t{i}", status="pass", durationMs=500.0,
                                            artifacts={"bot": f"scenarios/scenario-{i:02d}/bot.log"}))
    return make_summary(scenarios)


def lock_summary() -> Summary:
    legacy = attempt_scope_turn("!bad:x", "att-1", 0.0)
    fine = narrow_turn("!good:x", "att-2", 10.0)
    lock = analyze_lock_evidence(legacy + fine).model_dump(mode="json", by_alias=True)
    tag_scenarios(lock, {"legacy-scope": legacy, "narrow-scope": fine})
    scenarios = [
        ScenarioResult(id="legacy-scope", title="t", status="fail", failure=Failure(expected="x"),
                       artifacts={"lock-timeline": "scenarios/legacy-scope/lock-timeline.svg"}),
        ScenarioResult(id="narrow-scope", title="t", status="pass",
                       artifacts={"lock-timeline": "scenarios/narrow-scope/lock-timeline.svg"}),
    ]
    return make_summary(scenarios, lock=lock)


def as_seen(md: str) -> str:
    """The markdown as GitHub shows it before anyone clicks: each <details> is its summary line only."""
    return re.sub(r"<details><summary>(.*?)</summary>.*?</details>", r"▶ \1", md, flags=re.S)


def details_blocks(md: str) -> list[str]:
    return re.findall(r"<details>.*?</details>", md, flags=re.S)


def test_a_70_scenario_report_shows_verdict_failures_and_timings_on_the_first_screen() -> None:
    md = render_markdown(big_run())
    first_screen = "\n".join(as_seen(md).splitlines()[:SCREEN_LINES])

    assert first_screen.startswith("# ❌ matrix-qa: fail — 68 passed, 2 failed")
    # What failed and what was seen, one line each, right under the title.
    assert md.splitlines()[2:7] == ["**Not passing:**", "", "- ❌ `scenario-07`: a step expected a reply; saw x",
                                    "- ❌ `scenario-41`: a step expected a reply; saw x", ""]
    assert "| `scenario-41` | t41 | ❌ fail |" in first_screen
    assert "## Timings" in first_screen and "| Total |" in first_screen
    # Every scenario is still in the report, folded.
    (everything,) = [b for b in details_blocks(md) if "<summary>All 70 scenarios</summary>" in b]
    assert everything.count("| `scenario-") == 70
    assert_tables_well_formed(md)


def test_short_tables_stay_open() -> None:
    md = render_markdown(big_run(n=OPEN_ROWS, failing=(3,)))
    assert "All " not in md.split("## Timings")[0].split("## Scenarios")[1]
    assert "| `scenario-00` |" in md.split("## Scenarios")[1].split("<details>")[0]


def test_every_details_block_follows_githubs_rules_for_markdown_inside() -> None:
    for md in (render_markdown(big_run()), render_markdown(lock_summary())):
        lines = md.splitlines()
        inside = fence_states(lines)
        for i, line in enumerate(lines):
            if inside[i]:
                continue
            if line.startswith("<details>"):
                assert line.endswith("</summary>"), line
                assert i == 0 or lines[i - 1] in ("", PASSING_PICTURES_START), f"no blank line before: {line}"
                assert lines[i + 1] == "", f"no blank line after the summary: {line}"
            if line == "</details>":
                assert lines[i - 1] == "", "no blank line before </details>"
        assert md.count("<details>") == md.count("</details>")


def test_the_failing_lock_scenario_is_drawn_red_open_and_links_its_svg() -> None:
    md = render_markdown(lock_summary())
    section = md.split("## Lock-timing evidence", 1)[1].split("\n## ", 1)[0]
    before_fold = section.split("<details>", 1)[0]

    link = "[timeline as SVG](scenarios/legacy-scope/lock-timeline.svg)"
    assert f"**`legacy-scope`: lock held during I/O for 799 ms** (red) · {link}" in before_fold
    mermaid = before_fold.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    assert mermaid.startswith("gantt\n") and ":crit, " in mermaid
    # The passing scenario is folded, with its own picture and link, between the CI summary's markers.
    passing = section.split(PASSING_PICTURES_START, 1)[1]
    assert "`narrow-scope` · [SVG](scenarios/narrow-scope/lock-timeline.svg)" in passing
    assert passing.count("```mermaid") == 1 and ":crit" not in passing.split("<!-- /matrix-qa")[0]
    # The per-turn rows and probes are folded too.
    assert "<details><summary>Per-turn lock evidence (2 turns)</summary>" in section


def test_the_job_summary_keeps_only_the_failing_pictures() -> None:
    md = render_markdown(lock_summary())
    ci = render_ci_summary(md)
    assert ci.count("```mermaid") == 1 and "legacy-scope" in ci and "narrow-scope` · [SVG]" not in ci
    assert "<details><summary>Lock timelines" not in ci
    assert md.count("```mermaid") == 2


def test_markers_inside_a_fence_are_text() -> None:
    md = f"a\n```text\n{PASSING_PICTURES_START}\n```\nb\n"
    assert drop_passing_pictures(md) == md
    unclosed = f"a\n{PASSING_PICTURES_START}\nb\n"
    assert drop_passing_pictures(unclosed) == unclosed


def test_long_artifact_lists_fold() -> None:
    md = render_markdown(big_run())
    artifacts = md.split("## Artifacts", 1)[1]
    # The run's own files stay in sight; the per-scenario list is folded.
    assert as_seen(artifacts).strip() == ("- output log: [matrix-qa-output.log](matrix-qa-output.log)\n\n"
                                          "▶ Artifacts of 68 scenarios")
    assert artifacts.count("- `scenario-") == 68


def test_many_failing_lock_scenarios_are_drawn_up_to_the_cap_and_the_rest_say_so() -> None:
    from qa.report.markdown import MERMAID_FAILING

    traces = {f"legacy-{i}": attempt_scope_turn(f"!s{i}:x", f"att-{i}", i * 1000.0) for i in range(MERMAID_FAILING + 2)}
    lock = analyze_lock_evidence([r for t in traces.values() for r in t]).model_dump(mode="json", by_alias=True)
    tag_scenarios(lock, traces)
    md = render_markdown(make_summary([ScenarioResult(id=i, title="t", status="fail") for i in traces], lock=lock))
    assert md.count("```mermaid") == MERMAID_FAILING
    assert md.count(f"(not drawn here: the first {MERMAID_FAILING} are)") == 2
