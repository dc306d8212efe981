"""--homeservers (issue 29): the pure parts of a run on several homeservers. How many `auto` makes (one for a short
plan or another backend, one a core from 12 scenarios on, each with 2 job slots and one more per 12 scenarios at
most), which slots each serves, the usage checks, the scheduler keeping a scenario on its slot's homeserver and a
restart alone on its own homeserver, a death of any homeserver named with its log, and the summary's count of what
each one served."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from qa.harness.jobs import AUTO_MIN_SCENARIOS, homeserver_count, parse_homeservers, slot_homeservers
from qa.harness.output import Output
from qa.homeserver.base import Homeserver, UserCredentials
from qa.kernel.errors import ConfigError, InfraError
from qa.report.summary import ScenarioResult
from qa.run.homeservers import check_count, places
from qa.run.lifecycle import Lifecycle
from qa.run.scheduler import Scheduler
from qa.shared.canary import CANARY
from tests.unit.test_run_retry import Scenario, resources
from tests.unit.test_start_order import Restarts


@pytest.mark.parametrize(("text", "count"), [("auto", None), (" AUTO ", None), ("1", 1), ("2", 2), ("8", 8)])
def test_the_flag_reads_auto_or_a_count(text: str, count: int | None) -> None:
    assert parse_homeservers(text) == count


@pytest.mark.parametrize(("text", "why"), [
    ("0", "must be at least 1, got 0"), ("-2", "must be at least 1, got -2"),
    ("9", "must be at most 8, got 9: each is a Synapse process of ~100 MB"),
    ("two", "expected auto or a whole number, got 'two'")])
def test_a_bad_count_says_why(text: str, why: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_homeservers(text)
    assert str(raised.value) == why


@pytest.mark.parametrize(("requested", "backend", "jobs", "scenarios", "cores", "count"), [
    (None, "synapse", 4, 16, 2, 2),  # the fast profile at the default --jobs on 2 cores: wall 0.81 on two
    (None, "synapse", 4, AUTO_MIN_SCENARIOS - 1, 2, 1),
    (None, "synapse", 4, AUTO_MIN_SCENARIOS, 2, 2),
    (None, "synapse", 4, 11, 2, 1),  # the documented threshold (docs/cli.md): 12 scenarios, the first clear gain
    (None, "synapse", 4, 12, 2, 2),
    (None, "synapse", 4, 8, 2, 1),  # --profile restart (8): wall 0.885 (0.64-1.23) on two, too wide to call
    (None, "synapse", 4, 4, 2, 1),  # a short plan: the second Synapse's boot is not won back (wall 1.00)
    (None, "synapse", 4, 1, 2, 1),  # the canary alone
    (None, "synapse", 2, 16, 2, 1),  # the fast profile at --jobs 2 or 3: a Synapse with one slot idles
    (None, "synapse", 3, 16, 2, 1),
    (None, "synapse", 2, 16, 1, 1),  # one core (the default --jobs there is 2)
    (None, "synapse", 4, 105, 2, 2),  # the all profile at the default --jobs on 2 cores
    (None, "synapse", 2, 105, 2, 1),  # one slot each would leave each Synapse idle while its scenario waits
    (None, "synapse", 3, 105, 2, 1),
    (None, "synapse", 4, 105, 1, 1),  # one core: the second Synapse has no core of its own
    (None, "synapse", 4, 105, None, 1),
    (None, "synapse", 8, 105, 4, 4),
    (None, "synapse", 8, 105, 64, 4),  # bounded by the jobs
    (None, "synapse", 8, 16, 4, 2),  # the fast profile on 4 cores (--jobs 8): by the plan, 12 scenarios each
    (None, "synapse", 8, 23, 4, 2),
    (None, "synapse", 8, 24, 4, 3),  # a third from 24
    (None, "synapse", 8, 35, 4, 3),
    (None, "synapse", 8, 36, 4, 4),
    (None, "synapse", 8, 11, 4, 1),
    (None, "synapse", 8, 0, 4, 1),
    (None, "external", 8, 105, 4, 1),  # someone's server is one server
    (None, "image", 8, 105, 4, 1),
    (None, "tuwunel", 8, 105, 4, 1),
    (3, "synapse", 4, 5, 2, 3),  # asked for: as asked, whatever the plan
    (1, "synapse", 4, 105, 2, 1),
])
def test_auto_is_one_homeserver_but_for_a_plan_of_12_or_more_on_the_embedded_synapse(
        requested: int | None, backend: str, jobs: int, scenarios: int, cores: int | None, count: int) -> None:
    assert homeserver_count(requested, backend=backend, jobs=jobs, scenarios=scenarios, cores=cores) == count


@pytest.mark.parametrize(("requested", "backend", "jobs", "message"), [
    (2, "external", 4, "--homeservers 2 needs the embedded Synapse (--homeserver synapse); --homeserver external is "
                       "one server"),
    (3, "tuwunel", 4, "--homeserver tuwunel is one server"),
    (3, "synapse", 2, "--homeservers 3 is more than --jobs 2: each homeserver serves at least one job slot"),
])
def test_an_explicit_count_the_run_cannot_honour_is_one_usage_line(requested: int, backend: str, jobs: int,
                                                                   message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_count(requested, backend, jobs)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(("requested", "backend", "jobs"), [(None, "external", 1), (1, "image", 1), (2, "synapse", 2),
                                                            (None, "synapse", 1)])
def test_what_the_run_can_honour_passes(requested: int | None, backend: str, jobs: int) -> None:
    check_count(requested, backend, jobs)


@pytest.mark.parametrize(("slots", "count", "served"), [(4, 2, [0, 1, 0, 1]), (3, 2, [0, 1, 0]), (2, 1, [0, 0]),
                                                        (5, 3, [0, 1, 2, 0, 1]), (0, 2, [])])
def test_slots_are_dealt_round_robin(slots: int, count: int, served: list[int]) -> None:
    assert slot_homeservers(slots, count) == served


def test_each_homeserver_has_its_own_places_and_the_first_keeps_the_old_ones(tmp_path: Path) -> None:
    work, run_dir = tmp_path / "work", tmp_path / "out"
    assert places(0, work, run_dir) == (work, run_dir / "homeserver")
    assert places(1, work, run_dir) == (work / "homeserver-2", run_dir / "homeserver-2")
    assert len({places(i, work, run_dir) for i in range(4)}) == 4


# --- the scheduler on several homeservers --------------------------------------------------------------------


class Watch:
    """What a fake run_scenario saw: which homeserver each scenario ran on, and which scenarios were running on a
    homeserver when a restart started there."""

    def __init__(self) -> None:
        self.on: dict[str, str] = {}
        self.running: dict[str, set[str]] = {}
        self.beside_restart: list[tuple[str, set[str]]] = []
        self.elsewhere: list[set[str]] = []  # running on the other homeservers as each restart began
        self.most: dict[str, int] = {}

    async def run(self, scenario: Any, res: Any, say: Any) -> ScenarioResult:
        hs = res.homeserver
        self.on[scenario.id] = hs
        here = self.running.setdefault(hs, set())
        if isinstance(scenario, Restarts):
            self.beside_restart.append((scenario.id, set(here)))
            self.elsewhere.append({s for k, on in self.running.items() if k != hs for s in on})
        here.add(scenario.id)
        self.most[hs] = max(self.most.get(hs, 0), len(here))
        for _ in range(int(scenario.id.rsplit("-", 1)[-1]) if "-" in scenario.id else 3):  # s-<yields>
            await asyncio.sleep(0)  # a yield, not a wait: lets the other slots take their turns
        here.discard(scenario.id)
        return ScenarioResult(id=scenario.id, title=scenario.title, status="pass")


def _schedule(tmp_path: Path, plan: list[Any], jobs: int, homeservers: int,
              ready: Any = lambda watch: (), needed_only: bool = False) -> tuple[Watch, Scheduler]:
    watch = Watch()
    scheduler = Scheduler(jobs=jobs, repeat=1, fail_fast=False, run_id="r", out=Output(io.StringIO()),
                          run_scenario=watch.run, stop_reason=lambda: None)
    base = resources(tmp_path)
    pools = [replace(base, homeserver=f"hs{k + 1}") for k in range(homeservers)]  # type: ignore[arg-type]

    async def scheduled() -> None:
        async with asyncio.timeout(60):  # a hang guard only: these scenarios yield, they never sleep
            await scheduler.run(plan, pools, ready(watch), needed_only=needed_only)

    asyncio.run(scheduled())
    scheduler.settle(plan)
    return watch, scheduler


def test_scenarios_spread_over_every_homeserver_each_on_its_own_share_of_slots(tmp_path: Path) -> None:
    plan = [Scenario(CANARY), *(Scenario(f"s-{n}") for n in (9, 7, 5, 3, 8, 6, 4, 2))]
    watch, scheduler = _schedule(tmp_path, plan, jobs=4, homeservers=2)
    assert watch.on[CANARY] == "hs1", "the canary gates the run on the first homeserver"
    assert set(watch.on.values()) == {"hs1", "hs2"}, watch.on
    assert watch.most == {"hs1": 2, "hs2": 2}, "each homeserver serves its own 2 of the 4 slots"
    # The record says where each ran, as the scenario's resources said it.
    assert {r.id: f"hs{r.homeserver}" for r in scheduler.results} == watch.on
    assert all(r.status == "pass" for r in scheduler.results)


def test_a_homeservers_slots_wait_until_it_is_ready_and_the_others_do_not_wait_for_it(tmp_path: Path) -> None:
    plan = [Scenario(CANARY), *(Scenario(f"s-{n}") for n in (9, 8, 7, 6, 5, 4, 3, 2))]
    began: list[str] = []

    async def booted_after_three(watch: Watch) -> None:
        while len(watch.on) < 4:  # the canary and three scenarios started before this homeserver is ready
            await asyncio.sleep(0)
        began.extend(watch.on)

    watch, scheduler = _schedule(tmp_path, plan, jobs=4, homeservers=2,
                                 ready=lambda watch: [None, booted_after_three(watch)])
    assert [watch.on[s] for s in began] == ["hs1"] * 4, "before the second was ready, all ran on the first"
    assert "hs2" in watch.on.values(), "once ready, the second served its slots"
    assert all(r.status == "pass" for r in scheduler.results)


def test_a_homeserver_that_failed_to_boot_is_given_nothing(tmp_path: Path) -> None:
    async def fails() -> None:
        raise InfraError("homeserver 2 of 2: Synapse failed to start (exit code 1)")

    plan = [Scenario(CANARY), *(Scenario(f"s-{n}") for n in (5, 4, 3, 2))]
    watch, scheduler = _schedule(tmp_path, plan, jobs=4, homeservers=2, ready=lambda watch: [None, fails()])
    assert set(watch.on.values()) == {"hs1"}
    assert len(scheduler.results) == len(plan)


def test_under_auto_a_boot_still_running_once_the_plan_is_taken_is_not_waited_for(tmp_path: Path) -> None:
    booting = asyncio.Event()  # never set: the second homeserver's boot outlasts the plan

    plan = [Scenario(CANARY), *(Scenario(f"s-{n}") for n in (5, 4, 3, 2))]
    watch, scheduler = _schedule(tmp_path, plan, jobs=4, homeservers=2, needed_only=True,
                                 ready=lambda watch: [None, booting.wait()])
    assert set(watch.on.values()) == {"hs1"} and len(scheduler.results) == len(plan)
    assert all(r.status == "pass" for r in scheduler.results)


def test_an_explicit_count_waits_for_its_homeservers_boot(tmp_path: Path) -> None:
    """Without `needed_only` (an explicit --homeservers N) the scheduler waits for the boot: its failure, even as
    the last scenario ends, is the run's verdict (qa.run.lifecycle)."""
    plan = [Scenario(CANARY), *(Scenario(f"s-{n}") for n in (5, 4, 3, 2))]
    waited: list[str] = []

    async def boots_after_the_plan(watch: Watch) -> None:
        while len(watch.on) < len(plan) or watch.running.get("hs1"):
            await asyncio.sleep(0)
        waited.append("booted")

    watch, _ = _schedule(tmp_path, plan, jobs=4, homeservers=2, ready=lambda watch: [None, boots_after_the_plan(watch)])
    assert waited == ["booted"] and set(watch.on.values()) == {"hs1"}


def test_one_homeserver_takes_every_slot(tmp_path: Path) -> None:
    plan = [Scenario(CANARY), *(Scenario(f"s-{n}") for n in (5, 4, 3, 2))]
    watch, scheduler = _schedule(tmp_path, plan, jobs=4, homeservers=1)
    assert set(watch.on.values()) == {"hs1"} and watch.most == {"hs1": 4}
    assert {r.homeserver for r in scheduler.results} == {1}


def test_a_restart_runs_alone_on_its_homeserver_only(tmp_path: Path) -> None:
    plan = [Scenario(CANARY), Restarts("restart-3"), Restarts("restart-4"),
            *(Scenario(f"s-{n}") for n in (40, 30, 2, 2, 2, 2))]
    watch, scheduler = _schedule(tmp_path, plan, jobs=4, homeservers=2)
    assert [(sid, beside) for sid, beside in watch.beside_restart if beside] == [], \
        "nothing else runs on a homeserver while a scenario restarts it"
    assert len(watch.beside_restart) == 2
    assert any(watch.elsewhere), "the other homeserver's scenarios go on meanwhile: exclusive per homeserver only"
    assert all(r.status == "pass" for r in scheduler.results), [r.details for r in scheduler.results]


def test_unrun_and_skipped_scenarios_name_no_homeserver(tmp_path: Path) -> None:
    scheduler = Scheduler(jobs=2, repeat=1, fail_fast=False, run_id="r", out=Output(io.StringIO()),
                          run_scenario=Watch().run, stop_reason=lambda: "SIGTERM received")
    scheduler.running.add("started")
    scheduler.ran_on["started"] = 1
    plan = [Scenario("started"), Scenario("never")]
    scheduler.settle(plan)
    assert [(r.id, r.status, r.homeserver) for r in scheduler.results] == [("started", "interrupted", 2),
                                                                         ("never", "skip", None)]


# --- a homeserver that dies ----------------------------------------------------------------------------------


class Fake(Homeserver):
    kind = "synapse"

    def __init__(self, log: str) -> None:
        self.log_path = Path(log)

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:1"

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def restart(self) -> None: ...

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        raise NotImplementedError


async def _second_dies() -> tuple[Lifecycle, str]:
    homeservers = [Fake("out/homeserver/synapse.log"), Fake("out/homeserver-2/synapse.log")]
    lifecycle = Lifecycle(Output(io.StringIO()), [], lambda: None)
    forever = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_soon(homeservers[1].mark_died, "killed by signal 9")
    with pytest.raises(InfraError) as raised:
        await lifecycle.while_homeservers_live(homeservers, forever.wait())
    assert lifecycle.dead is homeservers[1]
    return lifecycle, str(raised.value)


async def _second_fails_to_boot() -> tuple[Lifecycle, str]:
    homeservers = [Fake("out/homeserver/synapse.log"), Fake("out/homeserver-2/synapse.log")]
    lifecycle = Lifecycle(Output(io.StringIO()), [], lambda: None)

    async def boot() -> float:
        raise InfraError("homeserver 2 of 2: Synapse failed to start (exit code 1); see out/homeserver-2/synapse.log")

    with pytest.raises(InfraError) as raised:
        await lifecycle.while_homeservers_live(homeservers, asyncio.Event().wait(), [asyncio.ensure_future(boot())])
    assert lifecycle.dead is homeservers[1]
    return lifecycle, str(raised.value)


async def _spare_fails_to_boot(work: Any) -> Lifecycle:
    homeservers = [Fake("out/homeserver/synapse.log"), Fake("out/homeserver-2/synapse.log")]
    lifecycle = Lifecycle(Output(io.StringIO()), [], lambda: None)

    async def boot() -> float:
        raise InfraError("homeserver 2 of 2: Synapse failed to start (exit code 1); see out/homeserver-2/synapse.log")

    boots = [asyncio.ensure_future(boot())]
    await asyncio.wait(boots)  # failed before the scenarios ended, and after: both are no trouble under auto
    assert boots[0].exception() is not None
    await lifecycle.while_homeservers_live(homeservers, work(homeservers), boots, spare=True)
    return lifecycle


def test_under_auto_a_further_homeserver_that_fails_to_boot_is_done_without() -> None:
    async def scenarios(homeservers: Any) -> None:
        await asyncio.sleep(0)

    lifecycle = asyncio.run(_spare_fails_to_boot(scenarios))
    assert lifecycle.reason is None and lifecycle.dead is None


def test_under_auto_a_homeserver_that_dies_mid_run_still_ends_it() -> None:
    async def second_dies(homeservers: Any) -> None:
        homeservers[1].mark_died("killed by signal 9")
        await asyncio.Event().wait()

    with pytest.raises(InfraError, match="homeserver 2 of 2 died mid-run: killed by signal 9"):
        asyncio.run(_spare_fails_to_boot(second_dies))


class _Unbootable(Fake):
    async def start(self) -> None:
        raise InfraError("Synapse failed to start (exit code 1)")


@pytest.mark.parametrize("spare", [True, False])
def test_a_failed_spare_boot_is_a_note_naming_it_and_its_log(spare: bool, caplog: pytest.LogCaptureFixture) -> None:
    from qa.run.homeservers import boot_others

    console = io.StringIO()
    homeservers = [Fake("out/homeserver/synapse.log"), _Unbootable("out/homeserver-2/synapse.log")]

    async def booting() -> BaseException | None:
        boots = boot_others(homeservers, Output(console), [], spare=spare)
        await asyncio.wait(boots)
        return boots[0].exception()

    with caplog.at_level("WARNING", logger="qa.homeserver.spare"):
        error = asyncio.run(booting())
    assert str(error) == "homeserver 2 of 2: Synapse failed to start (exit code 1)", "the record's reason"
    note = ("note: homeserver 2 of 2 failed to boot, so the run goes on without it (--homeservers auto: its job "
            "slots end, the others take the plan): Synapse failed to start (exit code 1); see "
            "out/homeserver-2/synapse.log")
    assert (note in console.getvalue()) is spare, console.getvalue()
    assert [r.getMessage() for r in caplog.records] == ([note] if spare else [])


def test_a_homeserver_that_fails_to_boot_ends_the_run_naming_which_and_its_log() -> None:
    lifecycle, message = asyncio.run(_second_fails_to_boot())
    assert message.startswith("homeserver 2 of 2: Synapse failed to start") and "homeserver-2/synapse.log" in message
    assert lifecycle.reason == "the homeserver 2 of 2 failed to boot"


def test_a_dead_homeserver_ends_the_run_naming_which_and_its_log() -> None:
    lifecycle, message = asyncio.run(_second_dies())
    assert message == ("synapse homeserver 2 of 2 died mid-run: killed by signal 9; see "
                       "out/homeserver-2/synapse.log")
    assert lifecycle.reason == "the homeserver 2 of 2 died: killed by signal 9"


# --- the record ----------------------------------------------------------------------------------------------


def test_the_summary_lists_each_homeserver_with_its_boot_and_what_it_served(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from qa.report.summary import Timings
    from qa.run.record import _homeservers

    async def booted() -> float:
        return 2400.0

    async def listing() -> Any:
        homeservers = [Fake(str(tmp_path / f"{name}/synapse.log")) for name in ("homeserver", "homeserver-2",
                                                                                "homeserver-3")]
        boots = [asyncio.ensure_future(booted()), asyncio.ensure_future(asyncio.Event().wait())]
        await asyncio.wait([boots[0]])
        boots[1].cancel()  # the third never got ready
        await asyncio.gather(boots[1], return_exceptions=True)
        run = SimpleNamespace(homeservers=homeservers, homeserver=homeservers[0], homeserver_boots=boots,
                              timings=Timings(homeserverBootMs=812.3), dir=tmp_path)
        results = [ScenarioResult(id=i, title=i, status="pass", homeserver=k) for i, k in
                   (("a", 1), ("b", 2), ("c", 2))] + [ScenarioResult(id="d", title="d", status="skip")]
        return _homeservers(run, results)  # type: ignore[arg-type]

    listed = asyncio.run(listing())
    assert [(h.index, h.log, h.bootMs, h.scenarios) for h in listed or []] == [
        (1, "homeserver/synapse.log", 812.3, 1), (2, "homeserver-2/synapse.log", 2400.0, 2),
        (3, "homeserver-3/synapse.log", None, 0)]


def test_the_summary_says_why_a_homeserver_never_booted(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from qa.report.summary import Timings
    from qa.run.record import _homeservers

    async def fails() -> float:
        raise InfraError("homeserver 2 of 2: Synapse failed to start (exit code 1)")

    async def listing() -> Any:
        boots = [asyncio.ensure_future(fails())]
        await asyncio.wait(boots)
        homeservers = [Fake(str(tmp_path / f"{name}/synapse.log")) for name in ("homeserver", "homeserver-2")]
        run = SimpleNamespace(homeservers=homeservers, homeserver=homeservers[0], homeserver_boots=boots,
                              timings=Timings(homeserverBootMs=812.3), dir=tmp_path, out=Output(io.StringIO()))
        return _homeservers(run, [ScenarioResult(id="a", title="a", status="pass", homeserver=1)])  # type: ignore[arg-type]

    listed = asyncio.run(listing()) or []
    assert [(h.index, h.bootMs, h.scenarios, h.notBooted) for h in listed] == [
        (1, 812.3, 1, None), (2, None, 0, "homeserver 2 of 2: Synapse failed to start (exit code 1)")]


@pytest.mark.parametrize(("asked", "why"), [("auto", f"(auto: {AUTO_MIN_SCENARIOS} scenarios or more)"),
                                            (2, "(--homeservers)")])
def test_the_report_says_what_chose_several_homeservers(asked: Any, why: str) -> None:
    from qa.report.markdown import render_markdown
    from qa.report.summary import HomeserverRun
    from tests.unit.test_report_render import make_summary

    summary = make_summary([ScenarioResult(id="a", title="a", status="pass", homeserver=1)], homeserversAsked=asked,
                           homeservers=[HomeserverRun(index=1, log="homeserver/synapse.log", bootMs=800, scenarios=1),
                                        HomeserverRun(index=2, log="homeserver-2/synapse.log",
                                                      notBooted="homeserver 2 of 2: Synapse failed to start")])
    report = render_markdown(summary)
    assert f"2 side by side {why}; 1: 1 scenario(s)" in report, report
    assert "2: 0 scenario(s), boot — (not booted: homeserver 2 of 2: Synapse failed to start), log" in report
    assert summary.to_json_dict()["homeserversAsked"] == asked


def test_the_run_and_the_report_give_auto_the_same_reason() -> None:
    """The run's first line (qa.harness.jobs.AUTO_RULE) and the report's Homeservers row (its own copy: the report
    may not import the harness) say the same rule."""
    from qa.harness.jobs import AUTO_RULE
    from qa.report.markdown import AUTO_HOMESERVERS_RULE

    assert AUTO_RULE == AUTO_HOMESERVERS_RULE == f"auto: {AUTO_MIN_SCENARIOS} scenarios or more"


@pytest.mark.parametrize("asked", ["bogus", 0, -1, [2]])
def test_a_summary_asking_for_no_sensible_count_is_refused(asked: Any) -> None:
    """homeserversAsked is "auto" or a count of 1 or more: a summary read again (`matrix-qa report`) with anything
    else is not a record of a run."""
    import pydantic

    from tests.unit.test_report_render import make_summary

    data = make_summary([ScenarioResult(id="a", title="a", status="pass")]).to_json_dict()
    with pytest.raises(pydantic.ValidationError, match="homeserversAsked"):
        type(make_summary([])).model_validate({**data, "homeserversAsked": asked})
