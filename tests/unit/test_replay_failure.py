"""A replayed scenario whose bot asked something unrecorded (qa.report.replay_failure), and how it reads."""

from __future__ import annotations

from qa.provider.cassette import Exchange
from qa.report.markdown import render_markdown
from qa.report.replay_failure import MAX_DIFF_LINES, apply_replay_misses
from qa.report.summary import Failure, ScenarioResult
from qa.shared.replay_miss import Miss
from tests.unit.test_report_render import make_summary

HINT = "re-record it: `matrix-qa run --provider live --model m --record fixtures/cassettes --scenario s`"
NEAREST = Exchange(2, "abc", {"model": "m"}, {"status": 200, "at_ms": 0})
DIFF = ["--- recorded (s.yaml #2)", "+++ this run", "@@ -1 +1 @@", "-  content: old", "+  content: new"]


def passed() -> ScenarioResult:
    return ScenarioResult(id="s", title="t", status="pass", details="2 steps passed")


def test_no_miss_leaves_the_result_alone() -> None:
    result = passed()
    assert apply_replay_misses(result, [], [], HINT).status == "pass"
    assert result.failure is None


def test_a_miss_fails_even_a_passing_scenario_with_diff_and_hint() -> None:
    result = apply_replay_misses(passed(), [Miss({}, NEAREST, DIFF)], [], HINT)
    assert result.status == "fail"
    assert result.details == "replay: 1 model request(s) match no recorded exchange"
    assert result.failure is not None
    assert result.failure.seen == ["request 1 with no recorded match (nearest recorded: exchange #2); the diff below"]
    assert result.failure.diff == DIFF
    assert HINT in result.failure.hints


def test_the_scenarios_own_failure_is_kept_as_a_consequence() -> None:
    failed = ScenarioResult(id="s", title="t", status="fail", details="step 2 (expect_reply): a reply",
                            failure=Failure(step=2, stepKind="expect_reply", expected="a reply"))
    result = apply_replay_misses(failed, [Miss({}, None, ["(the cassette holds no exchanges)"])], [], HINT)
    assert result.failure is not None and result.failure.step == 2
    assert result.failure.seen[0].endswith("(nothing recorded); the diff below")
    assert result.failure.seen[-1] == "the scenario itself then: step 2 (expect_reply): a reply"


def test_a_long_diff_is_cut_and_says_so() -> None:
    long = [f"+line {i}" for i in range(MAX_DIFF_LINES + 5)]
    result = apply_replay_misses(passed(), [Miss({}, NEAREST, long)], [], HINT)
    assert result.failure is not None
    assert result.failure.diff[-1] == "… 5 more diff lines"
    assert len(result.failure.diff) == MAX_DIFF_LINES + 1


def test_a_response_problem_alone_fails_too() -> None:
    result = apply_replay_misses(passed(), [], ["s.yaml #1: the response names a placeholder …"], HINT)
    assert result.status == "fail" and result.details.startswith("replay: s.yaml #1")


def test_junit_carries_the_diff_for_ci_test_views() -> None:
    from qa.report.junit import render_junit

    xml = render_junit(make_summary([apply_replay_misses(passed(), [Miss({}, NEAREST, DIFF)], [], HINT)]))
    assert "diff, recorded → this run:\n--- recorded (s.yaml #2)" in xml and "+  content: new" in xml


def test_the_report_shows_the_diff_and_the_hint() -> None:
    markdown = render_markdown(make_summary([apply_replay_misses(passed(), [Miss({}, NEAREST, DIFF)], [], HINT)]))
    # The whole diff, in a diff block (a seen block shows only its last lines).
    assert "```diff\n" + "\n".join(DIFF) + "\n```" in markdown
    assert "--record fixtures/cassettes --scenario s" in markdown


def test_a_diff_of_exactly_the_limit_is_whole_and_the_failure_says_what_was_expected() -> None:
    exact = [f"+line {i}" for i in range(MAX_DIFF_LINES)]
    result = apply_replay_misses(passed(), [Miss({}, NEAREST, exact)], [], HINT)
    assert result.failure is not None and result.failure.diff == exact
    assert result.failure.expected == "every model request matches the scenario's cassette (same messages, " \
        "tools, model, stream flag)"
    assert result.failure.hints[0] == "the scenario's prompts or the bot's requests changed since the cassette " \
        "was recorded"
