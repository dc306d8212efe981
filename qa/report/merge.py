"""Merging the summaries of shards (or any runs) into one summary: `matrix-qa report --merge DIR...`.

Pure: summaries in, one summary out; reading and writing files is the CLI's job. The rules, each chosen so a
merged summary never reads better than the runs it came from:

- **Scenarios**: one result per id. The canary runs in every shard (it is each shard's gate), so it appears
  once per shard; the merge keeps one, the worst (fail, then pass, then skip; the lowest shard on a tie), and
  says in its details how it fared in every shard. Order: the canary first, then by scenario file name, which
  is the plan order of an unsharded run.
- **Counts, status, exit code, reply latency**: recomputed from the merged scenarios, errors and lock verdict.
- **Lock evidence**: turns, probes and counters added up, the longest hold is the longest of any shard, and
  the verdict is `fail` if any shard's is.
- **Timings**: shards run side by side on different machines, so each phase is the longest shard's (totalMs is
  the wall time of the slowest shard); the bot boot median is recomputed over all scenarios.
- **Environment** comes from the first shard; **errors** are concatenated, each naming its shard.
"""

from __future__ import annotations

import os
import secrets
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from qa.kernel.errors import ConfigError
from qa.report.summary import (
    MergedRun,
    RunError,
    ScenarioResult,
    Summary,
    Timings,
    count,
    latency_stats,
)
from qa.report.verdict import run_verdict
from qa.shared.canary import CANARY

# Which duplicate result wins: a failure anywhere must show in the merged record.
_STATUS_RANK = {"interrupted": 0, "fail": 1, "pass": 2, "skip": 3}
_LOCK_COUNTERS = ("turnCount", "otherHolds", "modelRequests", "takeovers", "lockTimeouts")


@dataclass
class MergeInput:
    summary: Summary
    source: str | None = None  # the summary file, for mergedFrom
    # Where this summary's directory is, relative to the merged summary's: its scenario artifact paths are
    # rewritten through it so the merged report's links still lead to the files.
    artifact_prefix: str | None = None


def merged_run_id() -> str:
    return "merged-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def merge_summaries(parts: Sequence[MergeInput], *, run_id: str, command: Sequence[str] = ()) -> Summary:
    if not parts:
        raise ConfigError("nothing to merge: give at least one summary")
    parts = _in_shard_order(parts)
    results = _merge_scenarios(parts)
    errors = [RunError(component=e.component, message=f"[{_label(p.summary)}] {e.message}", log=e.log)
              for p in parts for e in p.summary.errors]
    lock = merge_lock([p.summary.lock for p in parts])
    counts = count(results)
    # A shard that was interrupted keeps the merged run interrupted, with its exit code: merging must never
    # turn a run that did not finish into a pass.
    interrupted = next((p.summary.exitCode for p in parts if p.summary.status == "interrupted"), None)
    status, code = run_verdict([r.status for r in results], errors=bool(errors), lock=lock,
                               interrupted_code=interrupted)
    summaries = [p.summary for p in parts]
    jobs = [s.jobs for s in summaries if s.jobs is not None]
    return Summary(
        runId=run_id, status=status, exitCode=code,
        startedAt=min(s.startedAt for s in summaries), finishedAt=max(s.finishedAt for s in summaries),
        command=list(command), environment=summaries[0].environment, counts=counts,
        timings=_merge_timings(summaries, results), scenarios=results, lock=lock, errors=errors,
        latency=latency_stats(ms for r in results for ms in r.replyLatenciesMs),
        jobs=max(jobs) if jobs else None,
        mergedFrom=[MergedRun(runId=s.runId, shard=s.shard, status=s.status, exitCode=s.exitCode,
                              totalMs=s.timings.totalMs, scenarios=len(s.scenarios), source=p.source)
                    for p, s in zip(parts, summaries, strict=True)],
    )


def _label(summary: Summary) -> str:
    return f"shard {summary.shard.index}/{summary.shard.count}" if summary.shard else f"run {summary.runId}"


def _in_shard_order(parts: Sequence[MergeInput]) -> list[MergeInput]:
    """Shards sorted by index, after checking they are one complete set: a merge that silently lacks a shard
    would report a third of the suite as the whole of it."""
    run_ids = [p.summary.runId for p in parts]
    repeated = sorted({r for r in run_ids if run_ids.count(r) > 1})
    if repeated:
        raise ConfigError(f"the same run is given more than once: {', '.join(repeated)}")
    sharded = [p for p in parts if p.summary.shard is not None]
    if not sharded:
        return list(parts)
    if len(sharded) != len(parts):
        plain = [p.summary.runId for p in parts if p.summary.shard is None]
        raise ConfigError(f"cannot merge shards with unsharded runs ({', '.join(plain)})")
    counts = {p.summary.shard.count for p in sharded if p.summary.shard}
    if len(counts) != 1:
        raise ConfigError(f"these shards come from different splits (N = {', '.join(map(str, sorted(counts)))})")
    total = counts.pop()
    indexes = [p.summary.shard.index for p in sharded if p.summary.shard]
    twice = sorted({i for i in indexes if indexes.count(i) > 1})
    if twice:
        raise ConfigError(f"shard(s) {', '.join(f'{i}/{total}' for i in twice)} given more than once")
    missing = sorted(set(range(1, total + 1)) - set(indexes))
    if missing:
        raise ConfigError(f"shard(s) {', '.join(f'{i}/{total}' for i in missing)} missing: a merge needs all "
                          f"{total}")
    return sorted(parts, key=lambda p: p.summary.shard.index if p.summary.shard else 0)


def _merge_scenarios(parts: Sequence[MergeInput]) -> list[ScenarioResult]:
    seen: dict[str, list[tuple[Summary, ScenarioResult]]] = {}
    for part in parts:
        for result in part.summary.scenarios:
            seen.setdefault(result.id, []).append((part.summary, _relocated(result, part.artifact_prefix)))
    merged = []
    for runs in seen.values():
        _, kept = min(runs, key=lambda run: _STATUS_RANK.get(run[1].status, len(_STATUS_RANK)))
        if len(runs) > 1:
            how = ", ".join(f"{_label(s)} {r.status}" for s, r in runs)
            kept = kept.model_copy(update={"details": f"{kept.details} (ran {len(runs)} times: {how})".strip()})
        merged.append(kept)
    return sorted(merged, key=lambda r: (r.id != CANARY, PurePosixPath(r.source or "").name or r.id, r.id))


def _relocated(result: ScenarioResult, prefix: str | None) -> ScenarioResult:
    if not prefix or not result.artifacts:
        return result
    moved = {name: str(PurePosixPath(prefix) / path) for name, path in result.artifacts.items()}
    return result.model_copy(update={"artifacts": moved})


def _longest(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _merge_timings(summaries: Sequence[Summary], results: Sequence[ScenarioResult]) -> Timings:
    boots = [r.botBootMs for r in results if r.botBootMs is not None]
    t = [s.timings for s in summaries]
    return Timings(
        homeserverBootMs=_longest([x.homeserverBootMs for x in t]),
        providerBootMs=_longest([x.providerBootMs for x in t]),
        forkServerWaitMs=_longest([x.forkServerWaitMs for x in t]),
        botBootMs=round(statistics.median(boots), 1) if boots else None,
        scenariosMs=_longest([x.scenariosMs for x in t]),
        reportMs=_longest([x.reportMs for x in t]),
        totalMs=_longest([x.totalMs for x in t]),
        note=None if len(summaries) == 1 else (
            f"Merged from {len(summaries)} runs that ran side by side: each phase is the longest run's (Total is "
            "the slowest run's wall time) and the bot boot median is over every scenario; each run's own total "
            "is listed in the summary's mergedFrom."),
    )


def merge_lock(sections: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Lock evidence of several runs as one: everything added up, `fail` if any run's verdict is `fail`."""
    present = [s for s in sections if s]
    if not present:
        return None
    verdicts = [s.get("verdict") for s in present]
    verdict = next((v for v in ("fail", "pass", "none") if v in verdicts), "n/a")
    merged = dict(present[0])  # scope, settings and their sources: the runs share one configuration
    merged["verdict"] = verdict
    # A run with nothing to check ("none") says so in its reasons; that is no reason once another run passed.
    merged["reasons"] = [r for s in present if s.get("verdict") == verdict for r in s.get("reasons") or []]
    merged["turns"] = [t for s in present for t in s.get("turns") or []]
    merged["probes"] = [p for s in present for p in s.get("probes") or []]
    for key in _LOCK_COUNTERS:
        merged[key] = sum(int(s.get(key) or 0) for s in present)
    merged["longestHoldMs"] = max(float(s.get("longestHoldMs") or 0.0) for s in present)
    merged["totalOverlapMs"] = round(sum(float(s.get("totalOverlapMs") or 0.0) for s in present), 3)
    return merged


def artifact_prefix(summary_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> str | None:
    """`summary_dir` relative to `out_dir`, in forward slashes (it ends up in markdown links); None if equal."""
    rel = os.path.relpath(os.path.abspath(summary_dir), os.path.abspath(out_dir))
    return None if rel == "." else PurePosixPath(*rel.split(os.sep)).as_posix()
