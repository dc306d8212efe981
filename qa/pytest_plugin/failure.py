"""What pytest prints for a failed scenario or test: the same text the markdown report shows (the line the CLI
prints, what was expected, what the harness saw, the hints), from the scenario's result. Pure."""

from __future__ import annotations

from typing import Any

from qa.report.failure_view import seen_view


class MatrixQAFailure(AssertionError):
    """A check did not hold. `result` is the scenario's record (qa.report.summary.ScenarioResult)."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class MatrixQAUsageError(TypeError):
    """A fixture method was called with what a scenario file could not say (the same check, the same words)."""


def failure_text(result: Any) -> str:
    """`details` (the CLI's one line), then expected, seen and hints as the report shows them."""
    lines = [f"{result.id} {result.status}: {result.details}"]
    failure = result.failure
    if failure is None:
        return lines[0]
    lines.append(f"expected: {failure.expected}")
    seen = seen_view(list(failure.seen), failure.expected)["lines"]
    if seen:
        lines.append("seen:")
        lines += [f"  {line}" for line in seen]
    if failure.hints:
        lines.append("hints:")
        lines += [f"  - {hint}" for hint in failure.hints]
    return "\n".join(lines)
