"""Steps about faults injected on purpose: set_faults (new homeserver fault rules for the bot's requests and, for an
application-service bot, the homeserver's pushes to it, from here on), expect_faults (a homeserver, push or
mock-provider fault rule was hit, and the client waited as long as it was told before it retried) and
release_hold (the mock provider's requests held under a name go on). expect_faults gathers the hits;
qa.evidence.faults judges them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from qa.evidence import faults as judge
from qa.harness.capabilities import Capability
from qa.harness.fault_rules import FaultRule, check_unique, retry_gaps
from qa.kernel.clock import mono_ms
from qa.scenario.context import StepFailed
from qa.scenario.fields import Duration, StepId
from qa.scenario.steps.base import SENT, Problem, StepBase, StepRef, opt_ref
from qa.scenario.steps.common import trace_about
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext


class SetFaults(StepBase):
    """Replace the fault rules (qa.harness.fault_rules) from here on, the fault proxy's and the push rules
    (`target: push`) alike; their counts start afresh. drop_in_flight: also cut the bot's open requests the new
    rules match (its current /sync long-poll), so the very next ones meet the new rules."""

    kind: ClassVar[str] = "set_faults"
    does: ClassVar[str] = (
        "replace the fault rules mid-scenario, the proxy's and `target: push` ones (`drop_in_flight` cuts the open "
        "long-poll) — see \"Faults on purpose\"")
    uses_fault_proxy: ClassVar[bool] = True

    rules: list[FaultRule] = Field(default_factory=list)
    drop_in_flight: bool = False

    def declared_fault_rules(self) -> list[FaultRule]:
        return list(self.rules)

    def needs(self) -> list[tuple[Capability, str | None]]:
        push = next((j for j, r in enumerate(self.rules) if r.target == "push"), None)
        return [("appservice", f"rules[{push}] target: push")] if push is not None else []

    def fault_problems(self, known: dict[str, FaultRule]) -> Iterator[Problem]:
        for j, problem in check_unique(self.rules):
            yield ("rules", j, "name"), problem, self.rules[j].name
        known.update((r.name, r) for r in self.rules)

    async def run(self, ctx: ScenarioContext) -> str:
        proxy = ctx.fault_proxy
        assert proxy is not None  # the runner starts one for every scenario with a step that uses it
        cut = proxy.set_rules([r for r in self.rules if r.target == "client"], drop_in_flight=self.drop_in_flight)
        if ctx.appservice is not None:
            await ctx.appservice.set_faults(self.rules)
        names = ", ".join(r.name for r in self.rules) or "none (faults off)"
        return f"fault rules now: {names}" + (f"; cut {cut} open request(s)" if self.drop_in_flight else "")


class ExpectFaults(StepBase):
    """A fault rule was hit: a homeserver rule of the fault proxy or of the pushes to an application-service bot
    (`target: push`: a redelivery is one hit each), or (source: provider) a mock-provider rule that served a
    fault. hits: exactly that many (at least one by default). retried_after_ms: after each hit the client's next
    matching request came no sooner than this (it waited as long as it was told); retried_within_ms: and no later
    than this (its backoff is bounded). ending: how each held request (`hold_ms`) ended: `client-gave-up` proves
    the bot noticed a silent request and hung up itself. landed_during: a sent message reached the homeserver
    after the rule was installed and before its last hit ended, i.e. while the bot's requests were failing; the
    step waits (bounded) for such a hit, else NOT CHECKED: what the scenario asks of that message proves nothing
    about the faults."""

    kind: ClassVar[str] = "expect_faults"
    does: ClassVar[str] = (
        "a fault `rule` was hit (`hits`, `retried_after_ms`; `source: provider` for mock-provider rules; "
        "`landed_during: STEP`: that message reached the homeserver after the rule was installed and before its "
        "last hit ended, else NOT CHECKED) — see \"Faults on purpose\"")

    rule: str = Field(min_length=1)
    source: Literal["homeserver", "provider"] = "homeserver"
    hits: int | None = Field(default=None, ge=1)
    retried_after_ms: int | None = Field(default=None, ge=0)
    retried_within_ms: int | None = Field(default=None, ge=0)
    ending: Literal["client-gave-up", "released", "timed-out"] | None = None
    # A message that must have landed while the hits were under way (the faults were in its way, not over).
    landed_during: StepId | None = None
    timeout: Duration | None = None

    def refs(self) -> list[StepRef]:
        return opt_ref("landed_during", self.landed_during, frozenset({SENT}), same_room=False)

    def needs(self) -> list[tuple[str, str | None]]:
        return [("model", "source: provider (a mock-provider fault)")] if self.source == "provider" else []

    def fault_problems(self, known: dict[str, FaultRule]) -> Iterator[Problem]:
        if self.source == "homeserver" and self.rule not in known:
            names = ", ".join(sorted(known)) or "none"
            yield (("rule",), f"unknown fault rule {self.rule!r} (rules in `faults` and earlier set_faults: {names})",
                   self.rule)
        elif self.source == "homeserver" and known[self.rule].target == "push":
            for name in ("retried_after_ms", "retried_within_ms", "ending"):
                if getattr(self, name) is not None:
                    yield ((name,), f"{name} is about the bot's retries of its own requests; {self.rule!r} is a "
                            "push rule (target: push), whose hits are the harness's deliveries", getattr(self, name))

    def _rule(self, ctx: ScenarioContext) -> FaultRule | None:
        declared = [*ctx.scenario.faults, *(r for s in ctx.scenario.steps for r in s.declared_fault_rules())]
        return next((r for r in declared if r.name == self.rule), None)

    def _pushed(self, ctx: ScenarioContext) -> bool:
        rule = self._rule(ctx)
        return self.source == "homeserver" and rule is not None and rule.target == "push"

    def _evidence(self, ctx: ScenarioContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
        """(hits, every request, the rule that matches later requests) from the fault proxy, the pushes or the
        journal. A push has no retry of the bot's to measure: no requests."""
        if self._pushed(ctx):
            pushed = ctx.appservice.hits if ctx.appservice is not None else []  # none: the scenario was skipped
            return [h for h in pushed if h["rule"] == self.rule], [], None
        if self.source == "homeserver":
            proxy = ctx.fault_proxy
            return [h for h in proxy.hits if h["rule"] == self.rule], list(proxy.requests), self._rule(ctx)
        requests = judge.provider_requests(ctx.provider.journal) if ctx.provider is not None else []
        return judge.provider_hits(requests, self.rule), requests, None

    def _installed_at(self, ctx: ScenarioContext) -> float | None:
        """When the fault proxy last installed this rule (the scenario's `faults:` at its start, else the latest
        set_faults naming it); None for a rule it has no record of (a push or provider rule)."""
        if self.source != "homeserver" or self._pushed(ctx) or ctx.fault_proxy is None:
            return None
        times = [i["at"] for i in ctx.fault_proxy.installed if any(r["name"] == self.rule for r in i["rules"])]
        return max(times) if times else None

    def _landed_problem(self, ctx: ScenarioContext, hits: list[dict[str, Any]]) -> str | None:
        assert self.landed_during is not None
        return judge.landed_while_failing(hits, ctx.refs[self.landed_during].landed_mono_ms, self.landed_during,
                                          began_at=self._installed_at(ctx))

    def _done(self, ctx: ScenarioContext) -> bool:
        """Nothing more to wait for: enough hits and, with landed_during, one under way or ended after the
        message landed (a rule with no count lets a scenario wait here for a failure after its message)."""
        hits, gaps = self._gaps(ctx)  # once: it reads the proxy's hits and the provider's journal
        return judge.complete(hits, gaps, self.hits, self.ending is not None) and (
            self.landed_during is None or self._landed_problem(ctx, hits) is None)

    def _gaps(self, ctx: ScenarioContext) -> tuple[list[dict[str, Any]], list[float | None] | None]:
        hits, requests, rule = self._evidence(ctx)
        measured = self.retried_after_ms is not None or self.retried_within_ms is not None
        return hits, retry_gaps(hits, requests, rule) if measured else None

    async def run(self, ctx: ScenarioContext) -> str:
        # Hits land as the bot retries: wait (bounded) on the evidence's own change signal, then judge it.
        with contextlib.suppress(WaitTimeout, TimeoutError):
            if self._pushed(ctx) and ctx.appservice is not None:
                # Complete once every hit has ended (a redelivery's answer is in): the count is then final.
                await ctx.appservice.wait_until(
                    lambda: judge.complete(self._gaps(ctx)[0], None, self.hits)
                    and all(h["endedAt"] is not None for h in self._gaps(ctx)[0]), self.wait_s(ctx))
            elif self.source == "homeserver":
                await ctx.fault_proxy.wait_until(lambda: self._done(ctx), self.wait_s(ctx))
            elif ctx.provider is not None:
                await ctx.provider.wait_for(lambda _entry: judge.complete(*self._gaps(ctx), self.hits),
                                            self.wait_s(ctx))
        hits, measured = self._gaps(ctx)
        gaps = measured if measured is not None else [None] * len(hits)
        problems = judge.fault_problems(self.rule, hits, gaps, self.hits, self.retried_after_ms)
        problems += judge.bound_problems(hits, gaps, self.retried_within_ms, self.ending)
        if problems:
            shown = self.retried_after_ms if self.retried_after_ms is not None else self.retried_within_ms
            raise StepFailed(judge.expectation(self.rule, self.source, self.hits, self.retried_after_ms,
                                               self.retried_within_ms, self.ending),
                             [*problems, *judge.hit_lines(hits, gaps, shown), *trace_about(ctx)[-8:]])
        found = judge.summary(self.rule, hits, gaps, self.retried_after_ms)
        if self.landed_during is not None:
            why = self._landed_problem(ctx, hits)
            if why:
                return f"{found}; NOT CHECKED: {why}: the faults were not in its way"
            return f"{found}; '{self.landed_during}' reached the homeserver while they were under way"
        return found


class ReleaseHold(StepBase):
    """Let the mock provider's requests held under `name` (a rule's `hold: NAME`) go on. A held model call is a
    window the scenario closes itself once it has done what must land inside it, instead of a latency that a
    loaded machine may outrun. The step first waits (bounded) until one of this scenario's requests is held under
    the name, and fails when none is: the window never opened, or its rule's `hold_ms` ran out first. It releases
    the hold either way, and for good: later requests under the name pass straight through."""

    kind: ClassVar[str] = "release_hold"
    does: ClassVar[str] = (
        "let the mock provider's model requests held under `name` (a rule's `hold: NAME`) go on, once one of this "
        "scenario's is held (waits up to `timeout`, fails when none is) — see \"Faults on purpose\"")
    capabilities: ClassVar[tuple[Capability, ...]] = ("model",)

    name: str = Field(min_length=1)
    timeout: Duration | None = None

    def provider_holds(self) -> list[tuple[tuple[str, ...], str]]:
        return [(("name",), self.name)]

    async def run(self, ctx: ScenarioContext) -> str:
        provider = ctx.provider
        if provider is None or not hasattr(provider, "release"):
            ctx.method = "not-checked"  # a live model or a replay holds nothing
            return f"NOT CHECKED: only the mock provider holds requests; nothing held under {self.name!r}"

        def held(entry: Any) -> bool:
            return entry.hold == self.name and entry.hold_end is None and entry.state == "in_flight"

        try:
            with contextlib.suppress(WaitTimeout, TimeoutError):
                # The entry itself is tested: rescanning the shared journal on every change of any entry was
                # quadratic in a long run, on the loop other scenarios time their waits on.
                await provider.wait_for(lambda entry: provider.owns(entry) and held(entry), self.wait_s(ctx))
            waiting = [e for e in provider.journal if held(e)]
        finally:  # released even when nothing was held: a request that comes later must not hang the bot
            provider.release(self.name, getattr(provider, "scope", ""))
        if not waiting:
            raise StepFailed(f"a model request of this scenario held under {self.name!r} (a rule's "
                             f"`hold: {self.name}`) to release",
                             [f"provider: {e.summary()} hold={e.hold} holdEnd={e.hold_end}"
                              for e in provider.journal[-10:]] or ["provider: no model request yet"])
        return f"released {self.name!r}: " + ", ".join(
            f"{e.id} held {mono_ms() - e.started_at:.0f} ms" for e in waiting)
