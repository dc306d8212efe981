"""Which scenarios a run executes, in what order, and which slice of them a shard runs: pure, so it is tested
without servers."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from qa.harness.keywords import Matcher, PatternError, compile_patterns
from qa.kernel.errors import ConfigError
from qa.shared.canary import CANARY


class _Planned(Protocol):
    id: str
    profiles: list[str]


P = TypeVar("P", bound=_Planned)


def select(scenarios: Sequence[P], profile: str, ids: Sequence[str], keywords: Sequence[str] = ()) -> list[P]:
    """Explicit ids win over the profile; `all` means every scenario; a scenario without profiles (an author's
    own, from --scenarios-dir) is in every profile. `-k` patterns (qa.harness.keywords) then narrow the choice.
    Plan order is the loaded order, with the canary first: if the canary fails, nothing else can be trusted."""
    known = {s.id: s for s in scenarios}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ConfigError(f"unknown scenario id(s): {', '.join(unknown)}; known ids: {', '.join(sorted(known))}")
    if not ids and not any(in_profile(s, profile) for s in scenarios):
        profiles = sorted({p for s in scenarios for p in s.profiles} | {"all"})
        raise ConfigError(f"no scenario is in profile {profile!r}; profiles: {', '.join(profiles)}")
    chosen = picked(scenarios, profile, ids, keywords)
    if not chosen:
        among = f"--scenario {' '.join(ids)}" if ids else f"profile {profile!r}"
        hint = "" if ids or profile == "all" else " (add --profile all to search every scenario)"
        raise ConfigError(f"no scenario of {among} matches -k {' -k '.join(map(repr, keywords))}{hint}")
    return chosen


def in_profile(scenario: _Planned, profile: str) -> bool:
    """`all` holds every scenario, and a scenario that names no profile is in every one."""
    return profile == "all" or not scenario.profiles or profile in scenario.profiles


def picked(scenarios: Sequence[P], profile: str, ids: Sequence[str], keywords: Sequence[str] = ()) -> list[P]:
    """What select chooses, without its refusals: `list` marks the rest as left out."""
    match = _keyword_matcher(keywords)
    wanted = set(ids)
    chosen = [s for s in scenarios if (s.id in wanted if ids else in_profile(s, profile))
              and match(s.id, getattr(s, "title", ""))]
    return sorted(chosen, key=lambda s: s.id != CANARY)


def _keyword_matcher(keywords: Sequence[str]) -> Matcher:
    try:
        return compile_patterns(keywords)
    except PatternError as exc:
        raise ConfigError(f"-k {exc}") from None


def runs_alone(scenario: Any) -> bool:
    """Whether a scenario touches something other scenarios depend on, so it must not overlap with any: a step
    whose effect reaches beyond the scenario's own users, rooms and bot says so (`runs_alone`; a homeserver
    restart interrupts every other scenario's sync). Such a scenario runs alone, even under --jobs."""
    return any(getattr(step, "runs_alone", False) for step in getattr(scenario, "steps", []))


# --- sharding ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`, 1-based as people (and CI job matrices) count."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


MAX_SHARDS = 1000
_SHARD_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> Shard:
    match = _SHARD_RE.fullmatch(text)
    if not match:
        raise ConfigError(f"--shard expects I/N (e.g. 2/5), got {text!r}")
    if len(match.group(2)) > 6 or len(match.group(1)) > 6:
        raise ConfigError(f"--shard {text.strip()[:40]}: N must be at most {MAX_SHARDS} (one CI job per shard)")
    index, count = int(match.group(1)), int(match.group(2))
    if count > MAX_SHARDS:
        raise ConfigError(f"--shard {text}: N must be at most {MAX_SHARDS} (one CI job per shard; more shards than "
                          "scenarios run the canary alone)")
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard {text}: I must be between 1 and N (N >= 1)")
    return Shard(index, count)


def shard_plan(plan: Sequence[P], shard: Shard, durations: Mapping[str, float] | None = None) -> list[P]:
    """The slice of `plan` that `shard` runs, in plan order.

    The canary runs in every shard: it is each shard's gate (a shard whose homeserver or bot is broken must not
    report its other scenarios as trustworthy). `qa.report.merge` keeps one canary result per merged summary.

    Everything else is assigned by a rule that depends only on scenario ids and the given durations, never on
    load order or the machine, so N CI jobs computing their own slice independently cover the plan exactly once:
    - without durations: ids sorted, dealt round-robin (balanced by count);
    - with durations (ms per id, from an earlier summary): greedy longest-processing-time: longest first, each to
      the least-loaded shard (ties: lower index). An id with no recorded duration weighs the median of the known.
    """
    others = sorted(s.id for s in plan if s.id != CANARY)
    known = {i: float(durations[i]) for i in others if durations and i in durations}
    assigned: dict[str, int] = {}
    if not known:
        assigned = {scenario_id: n % shard.count for n, scenario_id in enumerate(others)}
    else:
        default = statistics.median(known.values())
        weights = {i: known.get(i, default) for i in others}
        loads = [0.0] * shard.count
        for scenario_id in sorted(others, key=lambda i: (-weights[i], i)):
            target = min(range(shard.count), key=lambda k: (loads[k], k))
            assigned[scenario_id] = target
            loads[target] += weights[scenario_id]
    return [s for s in plan if s.id == CANARY or assigned.get(s.id) == shard.index - 1]


# --- start order under --jobs ------------------------------------------------------------------------------


def longest_first(plan: Sequence[P], estimates: Mapping[str, float], key: Callable[[str], str] = str) -> list[P]:
    """`plan` in the order side-by-side jobs should start it: longest expected first, so the run does not end on
    one long scenario while the other jobs idle (greedy longest-processing-time; the start order only, the
    record keeps the plan's). `estimates` holds expected ms per id, looked up under `key(id)` (an attempt
    under its scenario's id); an id it does not know weighs the median of the known. Ties keep plan order, so
    without estimates the order is the plan's."""
    known = [float(estimates[key(s.id)]) for s in plan if key(s.id) in estimates]
    if not known:
        return list(plan)
    default = statistics.median(known)
    weights = [float(estimates.get(key(s.id), default)) for s in plan]
    order = sorted(range(len(plan)), key=lambda n: (-weights[n], n))
    return [plan[n] for n in order]
