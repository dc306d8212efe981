"""A replayed scenario whose bot asked the model something the cassette does not hold: the failure a reader
sees, with the new request beside the nearest recorded one as a diff, and how to re-record.

Pure: the replay provider's misses in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Sequence

from qa.report.summary import Failure, ScenarioResult
from qa.shared.replay_miss import Miss

# A diff of a long conversation is long: each one is cut here, in the summary and the report alike.
MAX_DIFF_LINES = 200


def apply_replay_misses(result: ScenarioResult, misses: Sequence[Miss], problems: Sequence[str],
                        hint: str) -> ScenarioResult:
    """Fail `result` when the replay could not answer every request; unchanged otherwise. The scenario's own
    failure, if any, is kept in the seen lines: it is most likely a consequence of the unanswered request."""
    if not misses and not problems:
        return result
    seen: list[str] = list(problems)
    diff: list[str] = []
    for number, miss in enumerate(misses, 1):
        nearest = f"nearest recorded: exchange #{miss.nearest.index}" if miss.nearest else "nothing recorded"
        seen.append(f"request {number} with no recorded match ({nearest}); the diff below")
        diff.extend(miss.diff[:MAX_DIFF_LINES])
        if len(miss.diff) > MAX_DIFF_LINES:
            diff.append(f"… {len(miss.diff) - MAX_DIFF_LINES} more diff lines")
    if result.status not in ("pass", "skip") and result.details:
        seen.append(f"the scenario itself then: {result.details}")
    what = f"{len(misses)} model request(s) match no recorded exchange" if misses else problems[0]
    result.status = "fail"
    result.details = f"replay: {what}"
    result.failure = Failure(
        step=result.failure.step if result.failure else None,
        stepKind=result.failure.stepKind if result.failure else None,
        expected="every model request matches the scenario's cassette (same messages, tools, model, stream flag)",
        seen=seen,
        diff=diff,
        hints=["the scenario's prompts or the bot's requests changed since the cassette was recorded", hint],
    )
    return result
