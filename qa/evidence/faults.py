"""Whether a fault rule was hit as a step expects, and whether the client then waited as long as it was told.
Pure: over the hits and requests the fault proxy or the mock provider's journal recorded, and the retry gaps
(qa.harness.fault_rules.retry_gaps) measured between them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Gaps = Sequence[float | None]


def expectation(rule: str, source: str, hits: int | None, retried_after_ms: int | None,
                retried_within_ms: int | None = None, ending: str | None = None) -> str:
    """What the step expects, in words."""
    what = f"{'exactly' if hits else 'at least'} {hits or 1} hit(s) of {source} fault rule {rule!r}"
    if retried_after_ms is not None:
        what += f", each retried no sooner than {retried_after_ms} ms later"
    if retried_within_ms is not None:
        what += f", each retried within {retried_within_ms} ms"
    if ending is not None:
        what += f", each held request ended: {ending}"
    return what


def bound_problems(hits: Sequence[dict[str, Any]], gaps: Gaps, retried_within_ms: int | None,
                   ending: str | None) -> list[str]:
    """Bounded backoff (each hit followed by a retry within the bound) and how held requests ended."""
    problems = []
    if retried_within_ms is not None:
        late = [g for g in gaps if g is None or g > retried_within_ms]
        if late:
            problems.append(f"retried later than {retried_within_ms} ms (or never) after {len(late)} hit(s)")
    if ending is not None:
        other = [str(h.get("ending")) for h in hits if h.get("ending") != ending]
        if other:
            problems.append(f"{len(other)} hit(s) ended otherwise: {', '.join(other)}")
    return problems


def provider_requests(journal: Iterable[Any]) -> list[dict[str, Any]]:
    """The mock provider's chat requests as fault evidence: a provider retry is the next chat request."""
    return [{"method": e.method, "path": e.path, "startedAt": e.started_at, "endedAt": e.finished_at,
             "status": e.status, "rule": e.rule, "action": getattr(e, "fault", None)}
            for e in journal if e.is_chat]


def provider_hits(requests: Iterable[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    """The finished requests a provider rule answered with a fault."""
    return [r for r in requests if r["rule"] == rule and r["action"] and r["endedAt"] is not None]


def complete(hits: Sequence[dict[str, Any]], gaps: Gaps | None, hits_wanted: int | None, ended: bool = False
             ) -> bool:
    """Enough hits, and (when gaps are asked for) each followed by a later request, and (`ended`) each held one
    over: nothing more to wait for."""
    return (len(hits) >= (hits_wanted or 1) and (gaps is None or None not in gaps)
            and (not ended or all(h.get("ending") for h in hits)))


def hit_lines(hits: Sequence[dict[str, Any]], gaps: Gaps, retried_after_ms: int | None) -> list[str]:
    """One line per hit, with the gap to the next matching request when the step asks about retries."""
    lines = []
    for i, (hit, gap) in enumerate(zip(hits, gaps, strict=True), start=1):
        line = f"hit {i}: {hit['method']} {hit['path']} {hit['action']}"
        line += f" status={hit['status']}" if hit.get("status") else ""
        line += f", ended: {hit['ending']}" if hit.get("ending") else ""
        if retried_after_ms is not None:
            line += f", next matching request {gap} ms later" if gap is not None else ", no later matching request"
        lines.append(line)
    return lines


def fault_problems(rule: str, hits: Sequence[dict[str, Any]], gaps: Gaps, hits_wanted: int | None,
                   retried_after_ms: int | None) -> list[str]:
    problems = []
    if len(hits) < (hits_wanted or 1) or (hits_wanted is not None and len(hits) != hits_wanted):
        problems.append(f"{len(hits)} hit(s) of {rule!r}")
    early = [g for g in gaps if retried_after_ms is not None and (g is None or g < retried_after_ms)]
    if early:
        problems.append(f"retried sooner than {retried_after_ms} ms (or never) after {len(early)} hit(s)")
    return problems


def summary(rule: str, hits: Sequence[dict[str, Any]], gaps: Gaps, retried_after_ms: int | None) -> str:
    shown = f"; retried after {', '.join(f'{g:.0f}' for g in gaps if g is not None)} ms" \
        if retried_after_ms is not None else ""
    return f"{len(hits)} hit(s) of {rule}{shown}"


def hang_ended_by(fault: str, started_at: float, finished_at: float | None, stopped_at: float | None) -> str:
    """Which side ended a held request (a `hang` fault whose connection closed): the harness, when it had begun
    to stop the bot (at a step's timeout, or the scenario's end) before the connection closed; else the bot,
    which gave up waiting. Any other fault is said as it was served."""
    if not fault.startswith("hang:") or finished_at is None:
        return fault
    held = f"{max(finished_at - started_at, 0.0):.0f} ms"
    if stopped_at is not None and started_at <= stopped_at <= finished_at:
        return f"hang: ended by the harness, which stopped the bot after the request was held {held} " \
            "(the bot had not given up)"
    return f"hang: the bot gave up waiting after {held}"


def landed_while_failing(hits: Sequence[dict[str, Any]], landed_at: float | None, message: str, *,
                         began_at: float | None) -> str | None:
    """Why message `message` (on the homeserver at `landed_at`, monotonic ms) cannot be said to have landed while
    the rule's hits were under way, or None when it did: not before the rule was installed (`began_at`), and
    before the last hit ended (one still under way counts as not ended). A message that landed before the rule
    was installed met no fault: the bot may have had it already. One that landed after the faulty answers were
    over reached a bot whose requests worked again: its answer proves nothing about what the faults did (a bot
    that starts over from nothing after a failed /sync, losing what came meanwhile, answers it all the same)."""
    if landed_at is None:
        return f"'{message}' has no time it reached the homeserver"
    if began_at is None:
        return "the rule has no time it was installed"
    if landed_at < began_at:
        return f"'{message}' reached the homeserver {began_at - landed_at:.0f} ms before the rule was installed"
    if not hits:
        return "the rule was never hit"
    ends = [h.get("endedAt") for h in hits]
    if None in ends:
        return None
    last = max(float(end) for end in ends if end is not None)
    if landed_at > last:
        return f"'{message}' reached the homeserver {landed_at - last:.0f} ms after the rule's last hit had ended"
    return None
