"""JUnit XML for CI test-report widgets: one testsuite, one testcase per scenario.

Built with ElementTree so quoting is never our problem; the one thing ElementTree does not do is drop
characters XML 1.0 forbids (ANSI escapes from a homeserver log, NULs), so text is cleaned first.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from qa.report.summary import RunError, ScenarioResult, Summary

SUITE_NAME = "matrix-qa"
INFRA_CASE = "infrastructure"

_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _seconds(ms: float | None) -> str:
    return f"{(ms or 0.0) / 1000:.3f}"


def _failure_text(result: ScenarioResult) -> str:
    failure = result.failure
    if failure is None:
        return result.details
    parts = []
    if failure.step is not None or failure.stepKind:
        # A bot of several accounts: which one sent the message the failing step checked (issue 33).
        account = next((s.account for s in result.steps if s.index == failure.step and s.account), None)
        parts.append(f"step {failure.step if failure.step is not None else '?'} ({failure.stepKind or '?'})"
                     + (f", answered by the bot's account '{account}'" if account else ""))
    parts.append(f"expected: {failure.expected}")
    parts.append("seen:" if failure.seen else "seen: nothing")
    parts.extend(f"  {line}" for line in failure.seen)
    if failure.diff:
        parts.append("diff, recorded → this run:")
        parts.extend(failure.diff)
    parts.extend(f"hint: {hint}" for hint in failure.hints)
    return "\n".join(parts)


def _scenario_case(suite: ET.Element, result: ScenarioResult, classname: str) -> None:
    case = ET.SubElement(
        suite, "testcase", {"classname": classname, "name": _xml_text(result.id), "time": _seconds(result.durationMs)}
    )
    if result.passRate is not None:
        # Properties for tools that read them, and the sentence in system-out for the ones that show only text.
        p = result.passRate
        props = ET.SubElement(case, "properties")
        for name, value in (("passRate", "" if p.passRate is None else f"{p.passRate:g}"),
                            ("passed", str(p.passed)), ("finished", str(p.finished)), ("repeat", str(p.repeat)),
                            ("flaky", str(p.flaky).lower())):
            ET.SubElement(props, "property", {"name": name, "value": value})
    if result.status == "fail":
        message = result.failure.expected if result.failure else (result.details or "failed")
        failure = ET.SubElement(case, "failure", {"message": _xml_text(message), "type": "ScenarioFailed"})
        failure.text = _xml_text(_failure_text(result))
    elif result.status == "skip":
        ET.SubElement(case, "skipped", {"message": _xml_text(result.details)})
    elif result.status == "interrupted":
        error = ET.SubElement(case, "error", {"message": _xml_text(result.details or "interrupted"),
                                              "type": "Interrupted"})
        error.text = _xml_text(_failure_text(result)) if result.failure else None
    spoke = ", ".join(f"step {s.index} {s.account}" for s in result.steps if s.account)
    notes = ([result.details] if result.passRate is not None else []) + (
        [f"the bot's accounts that answered: {spoke}"] if spoke else []) + [
        f"infrastructure error, retried once: {t.error}" for t in result.retries]
    if notes:
        ET.SubElement(case, "system-out").text = _xml_text("\n".join(notes))


def _infra_case(suite: ET.Element, errors: list[RunError], classname: str) -> None:
    # One testcase for all of them: CI widgets show "1 error" next to the scenarios instead of hiding it.
    case = ET.SubElement(suite, "testcase", {"classname": classname, "name": INFRA_CASE, "time": "0.000"})
    first = errors[0]
    message = f"{first.component}: {first.message.splitlines()[0] if first.message else ''}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    error = ET.SubElement(case, "error", {"message": _xml_text(message), "type": first.component})
    blocks = [f"[{e.component}] {e.message}" + (f"\nlog: {e.log}" if e.log else "") for e in errors]
    error.text = _xml_text("\n\n".join(blocks))


def render_junit(summary: Summary) -> str:
    classname = f"{SUITE_NAME}.{summary.environment.profile}"
    # An interrupted run is never green in a CI test view, even when no scenario had started yet.
    errors = list(summary.errors)
    if summary.status == "interrupted" and not errors:
        errors = [RunError(component="interrupted", message=f"the run was interrupted (exit {summary.exitCode}); "
                           "its results are partial")]
    tests = len(summary.scenarios) + (1 if errors else 0)
    suite = ET.Element(
        "testsuite",
        {
            "name": SUITE_NAME,
            "tests": str(tests),
            "failures": str(sum(r.status == "fail" for r in summary.scenarios)),
            "errors": str((1 if errors else 0) + sum(r.status == "interrupted" for r in summary.scenarios)),
            "skipped": str(sum(r.status == "skip" for r in summary.scenarios)),
            "time": _seconds(summary.timings.totalMs),
            "timestamp": summary.startedAt,
        },
    )
    properties = ET.SubElement(suite, "properties")
    env = summary.environment
    for name, value in (
        ("runId", summary.runId),
        ("profile", env.profile),
        ("homeserver", " ".join(v for v in (env.homeserver.kind, env.homeserver.version) if v)),
        ("provider", f"{env.provider.mode} {env.provider.model}"),
        ("matrixQaVersion", env.matrixQaVersion),
        *((("repeat", str(summary.repeat)), ("flaky", str(summary.counts.flaky))) if summary.repeat else ()),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": _xml_text(value)})
    for result in summary.scenarios:
        _scenario_case(suite, result, classname)
    if errors:
        _infra_case(suite, errors, classname)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
