"""Chapter 4 of a run (qa.run): which scenario runs when, and what each one left.

Up to `jobs` scenarios at a time, started longest expected first (qa.harness.plan.longest_first: the run then
does not end on one long scenario while the other jobs idle; one at a time, in plan order). Side by side is
safe because each scenario has its own users, rooms, bot process, state dir, markers and view of the mock
provider's journal. Three exceptions keep the old guarantees:
- the canary runs first and alone: it is the gate, and nothing else starts until it has passed;
- a scenario that touches shared state (a homeserver restart: `runs_alone`) runs after the others, alone on its
  homeserver: with several (--homeservers, qa.run.homeservers), the first homeserver whose slots run out of
  scenarios takes it, and scenarios of the other homeservers go on beside it;
- skips (canary failed, --fail-fast) are decided when a scenario would start, so after a failure no new
  scenario starts while those already running finish.
A scenario that meets an infrastructure error is tried once more as a scenario of its own. On Ctrl-C the
cancellation reaches every running scenario through the task group, and each one's finally-blocks stop its bot.
"""

from __future__ import annotations

import asyncio
import hashlib
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qa.harness.jobs import slot_homeservers
from qa.harness.output import Output
from qa.harness.plan import longest_first, runs_alone
from qa.provider.record_replay import after_scenario, bind_scope
from qa.report.repeats import ATTEMPT_SEPARATOR, attempt_id, scenario_of
from qa.report.summary import Failure, InfraRetry, ScenarioResult, latency_stats
from qa.shared.canary import CANARY

if TYPE_CHECKING:
    from qa.scenario.runner import RunResources

Say = Callable[[str], None]
ScenarioRunner = Callable[[Any, "RunResources", Say], Awaitable[ScenarioResult]]


class Scheduler:
    def __init__(self, *, jobs: int, repeat: int, fail_fast: bool, run_id: str, out: Output,
                 run_scenario: ScenarioRunner, stop_reason: Callable[[], str | None],
                 estimates: Mapping[str, float] | None = None) -> None:
        self.jobs, self.repeat, self.fail_fast, self.run_id, self.out = jobs, repeat, fail_fast, run_id, out
        self.estimates = estimates or {}  # expected ms per scenario id: the start order under --jobs
        self._run_scenario = run_scenario
        self._stop_reason = stop_reason
        self.provider: Any = None  # the run's provider, once started: its scopes, skips and recordings
        self.results: list[ScenarioResult] = []  # in the order they finished
        self.running: set[str] = set()  # scenarios that started (their results may never come back)
        # A scenario cut short by the run's end files its partial result here (qa.scenario.runner).
        self.interrupted: list[ScenarioResult] = []
        self.infra_errors: list[str] = []  # homeserver failures inside scenarios (qa.kernel.errors.HomeserverError)
        self.config_errors: list[str] = []  # configuration errors found mid-scenario (qa.scenario.runner)
        self.ran_as: dict[str, str] = {}  # an infra retry: id planned → id it last ran as
        self.ran_on: dict[str, int] = {}  # scenario id → the homeserver (0-based) it ran on
        self.infra_on: dict[str, int] = {}  # an infra error's message → the homeserver (0-based) that gave it

    async def run(self, plan: list[Any], resources: RunResources | Sequence[RunResources],
                  ready: Sequence[Awaitable[Any] | None] = (), *, needed_only: bool = False) -> None:
        """Every scenario of the plan, as the module notes say. `resources`: one per homeserver (the first is the
        canary's); `ready`: per homeserver, what its slots wait for before they take a scenario (its boot; None:
        nothing). `needed_only` (`--homeservers auto`): a homeserver still booting once the others have taken the
        whole plan is not waited for (its boot is cancelled with the run's end). Results are put back in plan
        order by `settle`, whatever order they finish in."""
        pools = list(resources) if isinstance(resources, Sequence) else [resources]
        plan = list(plan)
        if self.jobs > 1 and plan and plan[0].id == self.gate:
            await self.run_one(plan.pop(0), pools[0])
        together = [s for s in plan if self.jobs == 1 or not runs_alone(s)]
        alone = iter([s for s in plan if self.jobs > 1 and runs_alone(s)])
        if self.jobs > 1:
            together = longest_first(together, self.estimates, key=scenario_of)
        pending = iter(together)  # shared by the workers: each takes the next scenario in that order
        slots = slot_homeservers(min(self.jobs, len(together)), len(pools))

        async def worker(k: int) -> None:
            for scenario in pending:
                await self.run_one(scenario, pools[k], k)

        taken = asyncio.Event()  # the whole plan is taken: nothing is left for a homeserver still booting

        async def homeserver(k: int) -> None:
            """Homeserver k's slots; once they find nothing left to take, the scenarios that must run alone on
            a homeserver, one at a time (shared with the others: whichever is free first)."""
            if k < len(ready) and (booting := ready[k]) is not None:
                try:
                    if needed_only and (booting := await _ready_unless(booting, taken)) is None:
                        return  # nothing was left for it
                    await booting
                except Exception:
                    # It failed to boot: nothing starts there. The run ends on that (qa.run.lifecycle), but under
                    # `auto` (needed_only) it goes on without it (qa.run.homeservers.boot_others said so).
                    return
            async with asyncio.TaskGroup() as group:
                for _ in range(slots.count(k)):
                    group.create_task(worker(k))
            for scenario in alone:
                await self.run_one(scenario, pools[k], k)
            if slots.count(k) or not together:  # its workers ended, so `pending` is empty; `alone` too
                taken.set()

        async with asyncio.TaskGroup() as group:
            for k in range(len(pools)):
                group.create_task(homeserver(k))

    async def run_one(self, scenario: Any, resources: RunResources, homeserver: int = 0) -> None:
        """One scenario, on `resources`' homeserver (index `homeserver` among the run's) for its whole life."""
        if self._must_skip(scenario):
            return
        self.running.add(scenario.id)
        self.ran_on[scenario.id] = homeserver
        say = self._say_for(scenario)
        say(f"▶ {scenario.title}" if self.jobs > 1 else f"▶ {scenario.id}: {scenario.title}")
        self.out.scenario_started(scenario.id)
        infra: list[str] = []
        result = await self._run_guarded(scenario, resources, infra, say)
        if infra and self._stop_reason() is None:
            # Infrastructure (the homeserver refused what any scenario needs) is never the scenario's failure:
            # one more try, as a scenario of its own (fresh users, rooms, markers); the record keeps both.
            say(f"  ↻ {scenario.id}: infrastructure error, retrying once: {infra[0].splitlines()[0]}")
            retry = scenario.model_copy(update={"id": f"{scenario.id}{ATTEMPT_SEPARATOR}retry"})
            self.ran_as[scenario.id] = retry.id
            first, infra = result, []
            result = await self._run_guarded(retry, resources, infra, say)
            result.id = scenario.id
            result.retries.append(InfraRetry(ranAs=scenario.id, error=self.out.redact(first.details),
                                             durationMs=first.durationMs))
        self.infra_errors.extend(infra)  # only a retry that failed the same way makes it the run's error
        self.infra_on.update(dict.fromkeys(infra, homeserver))
        after_scenario(self.provider, self.ran_as.get(scenario.id, scenario.id), result, say)
        result.latency = latency_stats(result.replyLatenciesMs)
        self.results.append(result)
        self.out.scenario_finished(scenario.id, result.status, result.durationMs / 1000)

    def settle(self, plan: list[Any]) -> None:
        """One result per planned scenario, in plan order: the interrupted filed under the id they were planned
        as, and a scenario that never finished (the run stopped early) said so."""
        stop_reason = self._stop_reason()
        planned_as = {ran: planned for planned, ran in self.ran_as.items()}
        for result in self.interrupted:  # a retry cut short files itself under the id it ran as
            result.id = planned_as.get(result.id, result.id)
        # Unplanned scenarios that never ran (an infra error stopped the run) are reported, not dropped.
        self.results.extend(r for r in self.interrupted if r.id not in {x.id for x in self.results})
        ran = {r.id for r in self.results}
        why = f"not run: the run was stopped early ({stop_reason})" if stop_reason else "not run: the run stopped early"
        for scenario in plan:
            if scenario.id in ran:
                continue
            if scenario.id in self.running:  # started, and cut short before it could say so itself
                self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="interrupted",
                                                   details=f"interrupted: {stop_reason or 'the run stopped'}"))
            else:
                self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="skip", details=why))
        for result in self.results:  # cut short or not, a scenario that started ran on one homeserver
            if result.homeserver is None and result.id in self.ran_on:
                result.homeserver = self.ran_on[result.id] + 1
        # Side by side, scenarios finish in any order; the record keeps the plan's.
        order = {s.id: i for i, s in enumerate(plan)}
        self.results.sort(key=lambda r: order.get(r.id, len(order)))

    @property
    def gate(self) -> str:
        """The canary's first attempt gates the run; its further attempts are measured like any other."""
        return attempt_id(CANARY, 1) if self.repeat > 1 else CANARY

    async def _run_guarded(self, scenario: Any, resources: RunResources, infra: list[str], say: Say) -> ScenarioResult:
        try:
            return await self._run_scenario(scenario, self.resources_for(scenario, resources, infra), say)
        except Exception as exc:  # a harness bug in one scenario must not lose the others or the report
            say(f"  ✘ {scenario.id}: harness error: {type(exc).__name__}: {exc}")
            return ScenarioResult(
                id=scenario.id, title=scenario.title, status="fail",
                details=f"harness error: {type(exc).__name__}: {exc}",
                failure=Failure(expected="the harness runs the scenario",
                                seen=traceback.format_exception(exc)[-6:]))

    def _say_for(self, scenario: Any) -> Say:
        """Progress lines of one scenario. Side by side, lines of different scenarios interleave, so each
        carries its scenario's id; one at a time they read as they always did."""
        prefix = f"[{scenario.id}] " if self.jobs > 1 else ""

        def say(message: str) -> None:
            self.out.say(prefix + message.strip() if prefix else message)

        return say

    def resources_for(self, scenario: Any, resources: RunResources, infra: list[str]) -> RunResources:
        """The run's resources as one scenario sees them: its own markers, and with the mock provider its own
        base URL and journal, so a journal check or a latency figure never counts another scenario's request.
        An attempt or a retry also gets its own user names: the runner cuts long ids short, but not run ids."""
        run_id = resources.run_id
        if ATTEMPT_SEPARATOR in scenario.id:
            run_id = run_id[:-6] + hashlib.sha256(f"{run_id}/{scenario.id}".encode()).hexdigest()[:6]
        own = replace(resources, markers=resources.markers.child(scenario.id), infra_errors=infra, run_id=run_id)
        if own.provider is not None and hasattr(own.provider, "scoped"):
            view = own.provider.scoped(scenario.id)
            own = replace(own, provider=view, model_base_url=view.base_url)
        return bind_scope(self.provider, scenario.id, own, self.run_id)

    def _must_skip(self, scenario: Any) -> bool:
        reason = None
        canary = next((r for r in self.results if r.id == self.gate), None)
        if canary is not None and canary.status != "pass":
            reason = "skipped: the canary failed, so nothing else can be trusted"
        elif self.fail_fast and any(r.status == "fail" for r in self.results):
            reason = "skipped: --fail-fast after an earlier failure"
        elif hasattr(self.provider, "skip_reason"):
            reason = self.provider.skip_reason(scenario.id)  # replay: the scenario has no cassette
        if reason:
            self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="skip", details=reason))
            self.out.say(f"  - {scenario.id} {reason}")
            self.out.scenario_finished(scenario.id, "skip", 0.0)
        return reason is not None


async def _ready_unless(booting: Awaitable[Any], taken: asyncio.Event) -> asyncio.Future[Any] | None:
    """`booting` as a future once it ended (well or not: the caller awaits it for that), or None if `taken` was
    set first. A coroutine given here is ours to cancel then; a task is the run's (qa.run.homeservers.cancel_boots)."""
    boot = asyncio.ensure_future(booting)
    done = asyncio.ensure_future(taken.wait())
    try:
        await asyncio.wait([boot, done], return_when=asyncio.FIRST_COMPLETED)
    finally:
        done.cancel()
    if boot.done():
        return boot
    if boot is not booting:
        boot.cancel()
    return None
