"""Lock-timing evidence: does the bot hold a session's write lock while it talks to the model?

Pure: takes trace records (qa.kernel.trace, which also finds the lock holds) and contention-probe results,
returns models for the report.

Intervals, all in the trace's monotonic ms:
  hold      lock.acquire → the matching lock.release (same session + attempt, same purpose preferred), or
            → a lock.takeover naming its attempt as `previous` (the lock file is gone then, and a SIGKILLed
            holder never releases). A hold still open when the trace ends counts up to the trace's last
            record; a release with no acquire in the trace (trace started mid-hold) counts from `t - heldMs`.
  model I/O model.request.start → model.request.end with the same requestId (approval.wait.start → .end
            too: waiting on a person is I/O as well; so are preview.edit.start → .end, a streaming draft sent
            or edited, and media.fetch.start → .end); open ones run to trace end.
  turn      everything with one (session, attempt) that has a turn.start or a model request; turn.start /
            turn.end give its start, event and outcome (without turn.start it starts at its first record).
            Holds of other attempts (a bot's separate inbound-append or notice writers) are not turns; they
            count in `otherHolds`, in the longest hold, and in the leaked-hold check.

Verdict:
  fail  when any of
          - a turn's holds overlap that same turn's model I/O (> 0 ms; measured on the union of each side, so
            parallel requests are not counted twice) — the legacy `attempt` scope does exactly this;
          - a hold still open at trace end overlaps model I/O anywhere in its session (a leaked lock);
          - a contention probe timed out while a model request of its session was in flight (judged at the
            end of its window, or over the hold it names with `heldSinceT`: timed_out_during_model_io), or
            timed out with no start time given (it cannot be cleared, and probes are fired during model I/O).
  pass  no failure and at least one model request was seen.
  none  no failure but no model request either: nothing was proven. The caller decides whether a scenario
        that expected model I/O treats that as a failure.
For a run (lock_section), a scenario whose bot traces holds but no model requests has the provider journal's
requests stand in for its model I/O: a hold during one fails too, and the verdict is pass or fail, never none.

The lock's whole life (issue 19). Every hold has a kind, from its purpose (HOLD_KINDS): a turn's own writes,
the inbound append, a skipped prompt's claim, post-turn work, compaction, a notice, the legacy whole turn.
Post-turn work and compaction run as attempts of their own with model requests, so they are judged exactly like
turns: a hold across the summary's or the hook's model I/O fails with that kind named. Also fail:
  - a turn that ends (turn.end) while one of its own holds stays open more than LEAK_GRACE_MS longer (or to
    the trace's end): the lock leaked, e.g. on the skipped-prompt path;
  - an attempt whose hold was taken over (lock.takeover, or lock.reclaim at startup) that afterwards sends a
    reply, writes the transcript (transcript.write), runs a tool (exec.run) or removes a lock file with the
    release of the taken hold (release `removed: true`): the fence must have stopped it.
Takeovers and startup reclaims are listed, each with what the stale attempt did afterwards.

Why overlap is per turn and not "any hold in the session during any model I/O": while attempt A waits on the
model, a second message to the same session appends its `user` record under a short hold of its own attempt
B. That is the behaviour the narrow lock exists to allow, so B's hold must not fail A's evidence. Holds in
another session never count at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from qa.kernel.trace import LOCK_RECORDS, TAKEOVER_RECORDS, Hold, record_key, timed
from qa.kernel.trace import holds as trace_holds

Interval = tuple[float, float]
# n/a: the bot reports no lock records at all (a bot without our trace, or one that keeps no session lock), so
# there is nothing to judge; never shown as "none" or as a pass.
Verdict = Literal["pass", "fail", "none", "n/a"]
NOT_APPLICABLE = "n/a (the bot reports no lock records)"
NO_MODEL_REQUEST = "no model request in the trace: nothing to check the lock against"
# Every contention-probe entry that could not be judged starts with this (the harness's too): the run's last line
# and the report's lock verdict count them by it.
PROBE_NOT_CHECKED = "contention probe NOT CHECKED"
# Hold purpose (the embedded agent's names, which a foreign bot may share) -> the kind the report lists.
HOLD_KINDS: dict[str, str] = {
    "reply": "turn", "tool": "turn", "tool-check": "turn", "failed": "turn", "turn": "whole-turn",
    "inbound": "inbound", "notice": "notice", "skip": "skipped-prompt", "post-turn": "post-turn",
    "compaction": "compaction",
}
# Which kind names an attempt: work of its own (compaction, post-turn) wins over the turn's writes.
_ATTEMPT_KIND_ORDER = ("compaction", "post-turn", "skipped-prompt", "whole-turn", "turn")
# A bot may trace turn.end a moment before the release that ends it; a leaked hold outlives it by far more.
LEAK_GRACE_MS = 50.0
# What a stale attempt must not do once its hold is gone.
_STALE_ACTIONS = {"reply.sent": "sent a reply", "transcript.write": "wrote the transcript", "exec.run": "ran a tool"}


class _Model(BaseModel):
    # camelCase on the wire like the trace and the summary JSON; snake_case in Python.
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class ProbeEvidence(_Model):
    """One contention probe: a second writer trying the session lock with a short timeout.

    `t` is the probe's start on the shared monotonic clock; exactly one of the elapsed fields is set.
    `during_model_io` is computed here from the trace.
    """

    session: str
    t: float | None = None
    acquired_elapsed_ms: float | None = None
    timeout_elapsed_ms: float | None = None
    error: str | None = None
    # A timed-out probe's optional word on when the hold that kept it out was taken (docs/bot-file.md).
    held_since_t: float | None = None
    during_model_io: bool | None = None
    # Why a timed-out probe could not be judged (NOT CHECKED), when it could not.
    note: str | None = None


class HoldKindEvidence(_Model):
    kind: str
    count: int
    longest_ms: float
    open: int


class TakeoverEvidence(_Model):
    t: float
    session: str
    by_attempt: str
    previous_attempt: str | None
    previous_pid: int | None = None
    previous_age_ms: float | None = None
    reason: str
    startup: bool
    # What the stale attempt did after losing its hold (empty: nothing, as the fence requires).
    after: list[str]


class TurnEvidence(_Model):
    session: str
    attempt: str
    kind: str = "turn"
    event_id: str | None = None
    outcome: str | None = None
    start_t: float
    end_t: float | None = None
    # Relative to start_t, ms.
    acquire: list[float]
    prompt: float | None
    cleanup: float | None
    holds: list[Interval]
    open_holds: int
    model_io: list[Interval]
    # Per model_io entry, what the I/O was (IO_KINDS' values): the picture tells a model call from a wait.
    io_kinds: list[str] = []
    overlap_ms: float
    longest_hold_ms: float
    summary: str


class LockEvidence(_Model):
    verdict: Verdict
    reasons: list[str]
    turn_count: int
    other_holds: int
    model_requests: int
    longest_hold_ms: float
    total_overlap_ms: float
    takeovers: int
    lock_timeouts: int
    probes: list[ProbeEvidence]
    turns: list[TurnEvidence]
    startup_reclaims: int = 0
    hold_kinds: list[HoldKindEvidence] = []
    takeover_list: list[TakeoverEvidence] = []


def hold_kind(purpose: str) -> str:
    return HOLD_KINDS.get(purpose, "other")


def analyze_lock_evidence(
    records: Sequence[Mapping[str, Any]], probes: Iterable[Mapping[str, Any] | ProbeEvidence] = ()
) -> LockEvidence:
    ordered = timed(records)
    trace_end = float(ordered[-1]["t"]) if ordered else 0.0

    holds = trace_holds(ordered)
    model = _model_io(ordered, trace_end)
    turns = _turns(ordered)
    reasons: list[str] = []

    turn_evidence: list[TurnEvidence] = []
    for key, info in turns.items():
        session, attempt = key
        own_holds = [h for h in holds if (h.session, h.attempt) == key]
        hold_iv = [(h.start, trace_end if h.end is None else h.end) for h in own_holds]
        own_io = [(iv, kind) for (s, a), iv, kind in model if (s, a) == key]
        model_iv = [iv for iv, _ in own_io]
        overlap = _intersection_ms(union(hold_iv), union(model_iv))
        evidence = _turn(session, attempt, info, own_holds, hold_iv, model_iv, overlap)
        evidence.io_kinds = [kind for _, kind in own_io]
        turn_evidence.append(evidence)
        label = attempt if evidence.kind == "turn" else f"{attempt} ({evidence.kind})"
        if overlap > 0:
            reasons.append(f"session {session} attempt {label}: lock held during model I/O for {overlap:.1f}ms")
        reasons.extend(_leaked_at_end(session, label, info, own_holds))

    for hold in holds:
        if hold.end is not None:
            continue
        in_session = union([iv for (s, _), iv, _ in model if s == hold.session])
        leaked = _intersection_ms([(hold.start, trace_end)], in_session)
        if leaked > 0:
            reasons.append(
                f"session {hold.session} attempt {hold.attempt}: hold ({hold.purpose}) still open at trace end, "
                f"overlapping model I/O for {leaked:.1f}ms"
            )

    probe_evidence = [_probe(p, model) for p in probes]
    for probe in probe_evidence:
        if probe.timeout_elapsed_ms is None or probe.note is not None:
            continue
        if probe.during_model_io is None:
            reasons.append(f"session {probe.session}: contention probe timed out (start time unknown)")
        elif probe.during_model_io:
            reasons.append(
                f"session {probe.session}: contention probe timed out after {probe.timeout_elapsed_ms:.1f}ms "
                "while a model request was in flight"
            )

    takeovers = _takeovers(ordered, holds)
    for tk in takeovers:
        if tk.after:
            reasons.append(f"session {tk.session} attempt {tk.previous_attempt}: its hold was taken over "
                           f"({'startup ' if tk.startup else ''}{tk.reason}) but it then {', '.join(tk.after)}")

    all_holds = [(trace_end if h.end is None else h.end) - h.start for h in holds]
    verdict: Verdict = "fail" if reasons else ("pass" if model else "none")
    if verdict == "none":
        reasons.append(NO_MODEL_REQUEST)
    return LockEvidence(
        verdict=verdict,
        reasons=reasons,
        turn_count=len(turn_evidence),
        other_holds=sum(1 for h in holds if (h.session, h.attempt) not in turns),
        model_requests=len(model),
        longest_hold_ms=round(max(all_holds, default=0.0), 3),
        total_overlap_ms=round(sum(t.overlap_ms for t in turn_evidence), 3),
        takeovers=sum(1 for r in ordered if r.get("type") == "lock.takeover"),
        lock_timeouts=sum(1 for r in ordered if r.get("type") == "lock.timeout"),
        probes=probe_evidence,
        turns=turn_evidence,
        startup_reclaims=sum(1 for r in ordered if r.get("type") == "lock.reclaim"),
        hold_kinds=_hold_kinds(holds, trace_end),
        takeover_list=takeovers,
    )


def _hold_kinds(holds: Sequence[Hold], trace_end: float) -> list[HoldKindEvidence]:
    by_kind: dict[str, list[Hold]] = {}
    for hold in holds:
        by_kind.setdefault(hold_kind(hold.purpose), []).append(hold)
    return [
        HoldKindEvidence(
            kind=kind, count=len(items), open=sum(1 for h in items if h.end is None),
            longest_ms=round(max((trace_end if h.end is None else h.end) - h.start for h in items), 3),
        )
        for kind, items in sorted(by_kind.items())
    ]


def _leaked_at_end(session: str, label: str, info: Mapping[str, Any], holds: Sequence[Hold]) -> list[str]:
    """A turn's own hold still open when the turn said it ended: nobody will release it now."""
    end = info.get("end")
    if end is None:
        return []
    return [f"session {session} attempt {label}: turn ended ({info.get('outcome') or '?'}) with its lock still "
            f"held ({h.purpose})" for h in holds if h.start <= end and (h.end is None or h.end > end + LEAK_GRACE_MS)]


def _takeovers(ordered: Sequence[Mapping[str, Any]], holds: Sequence[Hold]) -> list[TakeoverEvidence]:
    found: list[TakeoverEvidence] = []
    for index, r in enumerate(ordered):
        previous = r.get("previous")
        if r.get("type") not in TAKEOVER_RECORDS or not isinstance(previous, Mapping):
            continue
        session = str(r.get("session", ""))
        stale = previous.get("attempt")
        t = float(r["t"])
        after: list[str] = []
        if stale is not None:
            for later in ordered[index + 1:]:
                action = _STALE_ACTIONS.get(str(later.get("type")))
                if action and record_key(later) == (session, str(stale)) and action not in after:
                    after.append(action)
            if any(h.removed_after_takeover and (h.session, h.attempt) == (session, str(stale)) for h in holds):
                after.append("removed a lock file when it released")
        pid, age = previous.get("pid"), previous.get("ageMs")
        found.append(TakeoverEvidence(
            t=t, session=session, by_attempt=str(r.get("attempt", "")),
            previous_attempt=None if stale is None else str(stale),
            previous_pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            previous_age_ms=float(age) if isinstance(age, int | float) and not isinstance(age, bool) else None,
            reason=str(r.get("reason", "")), startup=r.get("type") == "lock.reclaim", after=after,
        ))
    return found


def has_lock_records(records: Iterable[Mapping[str, Any]]) -> bool:
    return any(r.get("type") in LOCK_RECORDS for r in records)


def has_model_records(records: Iterable[Mapping[str, Any]]) -> bool:
    return any(r.get("type") == "model.request.start" for r in records)


def not_applicable(model_requests: int) -> dict[str, Any]:
    """The lock section of a run whose bot reports no lock records: every field present, nothing judged."""
    return LockEvidence(verdict="n/a", reasons=[NOT_APPLICABLE], turn_count=0, other_holds=0,  # the rest: defaults
                        model_requests=model_requests, longest_hold_ms=0.0, total_overlap_ms=0.0, takeovers=0,
                        lock_timeouts=0, probes=[], turns=[]).model_dump(mode="json", by_alias=True)


def lock_section(traces: Mapping[str, Sequence[Mapping[str, Any]]], journals: Mapping[str, Sequence[Interval]],
                 probes: Iterable[Mapping[str, Any] | ProbeEvidence] = ()) -> dict[str, Any] | None:
    """The run's lock verdict, decided here once: the summary's `lock` section from each scenario's trace
    (`traces`, by scenario) and the provider journal's model requests of that scenario (`journals`).

    None when no scenario left a trace; n/a when no trace has a lock record. A scenario whose bot traces its
    holds but not its model requests has its journal stand in for its model I/O (journal_overlap_reasons):
    per scenario, since scenarios run side by side and one's requests say nothing about another's holds."""
    if not traces:
        return None
    records = [record for trace in traces.values() for record in trace]
    if not has_lock_records(records):
        return not_applicable(sum(1 for r in records if r.get("type") == "model.request.start")
                              or sum(len(io) for io in journals.values()))
    evidence = analyze_lock_evidence(records, probes)
    borrowed = {sid: journals[sid] for sid, trace in traces.items()
                if journals.get(sid) and has_lock_records(trace) and not has_model_records(trace)}
    if borrowed:
        from_journal = sum(len(io) for io in borrowed.values())
        journal_reasons = [r for sid, io in borrowed.items() for r in journal_overlap_reasons(traces[sid], io)]
        failed = evidence.verdict == "fail" or bool(journal_reasons)
        evidence = evidence.model_copy(update={
            "verdict": "fail" if failed else "pass", "model_requests": evidence.model_requests + from_journal,
            "reasons": [r for r in evidence.reasons if r != NO_MODEL_REQUEST] + journal_reasons
            + [f"model I/O of {from_journal} request(s) taken from the provider journal (the bot traces no model "
               "requests)"]})
    section = evidence.model_dump(mode="json", by_alias=True)
    start = next((r for r in records if r.get("type") == "start" and isinstance(r.get("lock"), dict)), None)
    settings = start["lock"] if start else {}
    section["scope"] = settings.get("scope")
    section["settings"] = {k: settings.get(k) for k in ("acquireTimeoutMs", "staleMs", "maxHoldMs")}
    section["sources"] = settings.get("sources", {})
    return section


def journal_overlap_reasons(records: Sequence[Mapping[str, Any]], journal_io: Sequence[Interval]) -> list[str]:
    """For a bot that traces its lock holds but not its model requests: the provider journal's request
    intervals (same monotonic clock) stand in for model I/O. Sessions are unknown there, so any hold during any
    of the scenario's model requests counts: stricter than the per-turn rule, never looser."""
    ordered = timed(records)
    trace_end = max([float(r["t"]) for r in ordered[-1:]] + [end for _, end in journal_io], default=0.0)
    model = union(journal_io)
    reasons = []
    for hold in trace_holds(ordered):
        overlap = _intersection_ms([(hold.start, trace_end if hold.end is None else hold.end)], model)
        if overlap > 0:
            reasons.append(f"session {hold.session} attempt {hold.attempt}: lock ({hold.purpose}) held for "
                           f"{overlap:.1f}ms while the provider journal shows a model request in flight")
    return reasons


# Waiting for a person to approve a tool call is I/O like a model call: no lock may be held across it. So are
# sending or editing a streaming preview and fetching an attachment.
_IO_START = frozenset({"model.request.start", "approval.wait.start", "preview.edit.start", "media.fetch.start"})
_IO_END = frozenset({"model.request.end", "approval.wait.end", "preview.edit.end", "media.fetch.end"})
# The start record's type -> the kind of I/O, as TurnEvidence.io_kinds names it.
IO_KINDS = {"model.request.start": "model", "approval.wait.start": "approval", "preview.edit.start": "preview",
            "media.fetch.start": "media"}
_IoItem = tuple[tuple[str, str], Interval, str]


def _model_io(ordered: Sequence[Mapping[str, Any]], trace_end: float) -> list[_IoItem]:
    started: dict[Any, tuple[tuple[str, str], float, str]] = {}
    done: list[_IoItem] = []
    for r in ordered:
        request = r.get("requestId", record_key(r))
        if r.get("type") in _IO_START:
            started[request] = (record_key(r), float(r["t"]), IO_KINDS[str(r.get("type"))])
        elif r.get("type") in _IO_END and request in started:
            key, start, kind = started.pop(request)
            done.append((key, (start, float(r["t"])), kind))
    done.extend((key, (start, trace_end), kind) for key, start, kind in started.values())
    return sorted(done, key=lambda item: item[1])


def _turns(ordered: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    relevant = {"turn.start", "turn.end", "lock.acquire", "lock.release", "model.request.start"}
    makes_turn = {"turn.start", "model.request.start"}
    is_turn = {record_key(r) for r in ordered if r.get("type") in makes_turn}
    turns: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ordered:
        kind = r.get("type")
        if kind not in relevant or record_key(r) not in is_turn:
            continue
        info = turns.setdefault(record_key(r), {"start": float(r["t"]), "started": False})
        if kind == "turn.start" and not info["started"]:
            info.update(start=float(r["t"]), started=True, eventId=r.get("eventId"))
        elif kind == "turn.end":
            info.update(end=float(r["t"]), outcome=r.get("outcome"))
            info.setdefault("eventId", r.get("eventId"))
    return turns


def _turn(
    session: str,
    attempt: str,
    info: Mapping[str, Any],
    holds: Sequence[Hold],
    hold_iv: Sequence[Interval],
    model_iv: Sequence[Interval],
    overlap: float,
) -> TurnEvidence:
    base = float(info["start"])

    def rel(x: float) -> float:
        return round(x - base, 3)

    closed = [h.end for h in holds if h.end is not None]
    durations = [end - start for start, end in hold_iv]
    acquire = [rel(h.start) for h in holds]
    prompt = rel(min(s for s, _ in model_iv)) if model_iv else None
    cleanup = rel(max(closed)) if closed else None
    open_holds = sum(1 for h in holds if h.end is None)
    summary = (
        f"acquire={','.join(f'{a:.1f}' for a in acquire) or '-'} "
        f"prompt={'-' if prompt is None else f'{prompt:.1f}'} "
        f"cleanup={'-' if cleanup is None else f'{cleanup:.1f}'} "
        f"holds={','.join(f'{d:.1f}' for d in durations) or '-'}ms "
        f"overlap={_ms(overlap)}ms"
    )
    if open_holds:
        summary += f" open={open_holds}"
    kinds = {hold_kind(h.purpose) for h in holds}
    return TurnEvidence(
        session=session,
        attempt=attempt,
        kind=next((k for k in _ATTEMPT_KIND_ORDER if k in kinds), "turn"),
        event_id=info.get("eventId"),
        outcome=info.get("outcome"),
        start_t=base,
        end_t=info.get("end"),
        acquire=acquire,
        prompt=prompt,
        cleanup=cleanup,
        holds=[(rel(s), rel(e)) for s, e in hold_iv],
        open_holds=open_holds,
        model_io=[(rel(s), rel(e)) for s, e in model_iv],
        overlap_ms=round(overlap, 3),
        longest_hold_ms=round(max(durations, default=0.0), 3),
        summary=summary,
    )


def _probe(raw: Mapping[str, Any] | ProbeEvidence, model: Sequence[_IoItem]) -> ProbeEvidence:
    probe = raw if isinstance(raw, ProbeEvidence) else ProbeEvidence.model_validate(raw)
    if probe.t is None:
        return probe.model_copy(update={"during_model_io": None, "note": None})
    requests = [(start, stop) for (s, _), (start, stop), _ in model if s == probe.session]
    if probe.timeout_elapsed_ms is None:
        end = probe.t + (probe.acquired_elapsed_ms or 0.0)
        # Closed test: a probe that starts exactly at a request's start is still "during" it.
        during = any(start <= end and probe.t <= stop for start, stop in requests)
        return probe.model_copy(update={"during_model_io": during, "note": None})
    during, note = timed_out_during_model_io(probe.t, probe.timeout_elapsed_ms, probe.held_since_t, requests)
    return probe.model_copy(update={"during_model_io": during, "note": note})


def timed_out_during_model_io(
    t: float, elapsed_ms: float, held_since_t: float | None, requests: Sequence[Interval]
) -> tuple[bool | None, str | None]:
    """Did the hold that kept a timed-out probe out overlap one of its session's model requests? (True/False,
    None) and, when None, why it cannot be told.

    A timeout proves the lock held at the probe's last try, at the window's end E (its first try may come late:
    a probe process waiting for a core), so
      - a request in flight at E is the bug, whatever else the probe says;
      - else, with `heldSinceT` (the earliest taking of the holds the probe saw), the holds [heldSinceT, E]
        overlapping a request is the bug, and holds taken after every request ended are a reply write, not it;
        a heldSinceT after E is from another clock and is not used;
      - else a window that overlaps a request that ended before E cannot be told from a reply write taken
        once the request ended: NOT CHECKED (the trace's holds still judge the turn);
      - a window touching no request is not during model I/O.
    """
    end = t + elapsed_ms
    if any(start <= end <= stop for start, stop in requests):
        return True, None
    if held_since_t is not None and held_since_t <= end:
        return any(held_since_t < stop and start < end for start, stop in requests), None
    if any(start <= end and t <= stop for start, stop in requests):
        why = ("gave no heldSinceT" if held_since_t is None
               else f"its heldSinceT {held_since_t:.1f} is after its window's end {end:.1f} (another clock?)")
        return None, (f"{PROBE_NOT_CHECKED}: it timed out after the model request its window overlaps had "
                      f"ended, and {why}, so the hold that kept it out may have been taken after the request "
                      "(a reply write)")
    return False, None


def probes_not_checked(probes: Iterable[Mapping[str, Any]]) -> int:
    """How many contention-probe entries (summary JSON) say NOT CHECKED: a probe that could not be judged, or
    a bot with no probe at all. The run's line and the report's verdict show the count."""
    return sum(1 for p in probes if isinstance(p, Mapping)
               and any(PROBE_NOT_CHECKED in str(p.get(k) or "") for k in ("note", "error")))


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, merged: touching intervals become one."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def intersections(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The stretches covered by both of two sorted, non-overlapping interval lists, in time order; touching is
    not overlap. The verdict sums them; the lock picture (qa.report.lock_timeline) draws them."""
    found: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            found.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return found


def _intersection_ms(a: Sequence[Interval], b: Sequence[Interval]) -> float:
    """Total length of the intersection of two sorted, non-overlapping interval lists."""
    return sum((end - start for start, end in intersections(a, b)), 0.0)


def _ms(value: float) -> str:
    return "0" if value == 0 else f"{value:.1f}"
