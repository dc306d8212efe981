"""The plan: selection, scenarios that must run alone, and sharding (pure, no servers)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from qa.cli import main
from qa.harness.plan import Shard, in_profile, parse_shard, picked, runs_alone, select, shard_plan
from qa.kernel.errors import ConfigError
from qa.scenario.steps.lifecycle import RestartBot, RestartHomeserver, StopBot
from qa.scenario.steps.messages import Send
from qa.scenario.steps.registry import STEP_TYPES
from qa.scenario.steps.replies import ExpectReply
from qa.shared.canary import CANARY


@dataclass
class S:
    id: str
    profiles: list[str] = field(default_factory=lambda: ["fast"])
    steps: list[Any] = field(default_factory=list)



IDS = [CANARY, *(f"matrix-s{i:02d}" for i in range(13))]


def plan_of(ids: list[str]) -> list[S]:
    return select([S(i) for i in ids], "fast", [])


def test_select_puts_the_canary_first() -> None:
    assert [s.id for s in plan_of(["b", "a", CANARY])] == [CANARY, "b", "a"]


def test_only_a_homeserver_restart_makes_a_scenario_run_alone() -> None:
    send, restart = Send(actor="driver", body="hi"), RestartHomeserver()
    assert runs_alone(S("x", steps=[send, restart]))
    assert not runs_alone(S("x", steps=[RestartBot(), StopBot(), ExpectReply(to="a")]))
    assert [kind for kind, cls in STEP_TYPES.items() if cls.runs_alone] == ["restart_homeserver"]


@pytest.mark.parametrize("text, expected", [("1/1", Shard(1, 1)), ("2/5", Shard(2, 5)), (" 3 / 3 ", Shard(3, 3))])
def test_parse_shard(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected
    assert str(expected) == f"{expected.index}/{expected.count}"


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "1", "a/b", "-1/3", "1/3/5", ""])
def test_parse_shard_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 13, 20])
def test_shards_cover_the_plan_exactly_once_with_the_canary_in_each(count: int) -> None:
    plan = plan_of(IDS)
    shards = [shard_plan(plan, Shard(i, count)) for i in range(1, count + 1)]
    for shard in shards:
        assert shard[0].id == CANARY
        # Plan order is kept inside a shard.
        assert [s.id for s in shard] == [s.id for s in plan if s in shard]
    others = [s.id for shard in shards for s in shard if s.id != CANARY]
    assert sorted(others) == sorted(IDS[1:])
    # By count: sizes differ by at most one.
    sizes = [len(shard) - 1 for shard in shards]
    assert max(sizes) - min(sizes) <= 1


def test_a_plan_without_the_canary_gets_none() -> None:
    plan = plan_of(["b", "a", "c"])
    assert [[s.id for s in shard_plan(plan, Shard(i, 2))] for i in (1, 2)] == [["a", "c"], ["b"]]


def test_sharding_depends_only_on_ids_not_on_load_order() -> None:
    plan = plan_of(IDS)
    shuffled = plan_of(list(reversed(IDS)))
    for i in (1, 2, 3):
        assert {s.id for s in shard_plan(plan, Shard(i, 3))} == {s.id for s in shard_plan(shuffled, Shard(i, 3))}


def test_durations_balance_by_longest_processing_time() -> None:
    plan = plan_of([CANARY, "a", "b", "c", "d", "e"])
    durations = {CANARY: 1000.0, "a": 9000.0, "b": 5000.0, "c": 4000.0, "d": 3000.0, "e": 1000.0}
    shards = [[s.id for s in shard_plan(plan, Shard(i, 2), durations)] for i in (1, 2)]
    # Longest first, each to the least-loaded shard: a→1 (9), b→2 (5), c→2 (9), d→1 (12), e→2 (10).
    assert shards == [[CANARY, "a", "d"], [CANARY, "b", "c", "e"]]


def test_durations_beat_count_when_one_scenario_is_long() -> None:
    ids = [CANARY, *"abcdef"]
    durations = {"a": 30000.0, **{i: 1000.0 for i in "bcdef"}}
    shards = [[s.id for s in shard_plan(plan_of(ids), Shard(i, 2), durations)] for i in (1, 2)]
    assert shards == [[CANARY, "a"], [CANARY, *"bcdef"]]


def test_unknown_durations_weigh_the_median_and_ties_are_stable() -> None:
    ids = [CANARY, *"abcdefg"]
    durations = {"a": 100.0, "b": 300.0, "c": 200.0}  # d..g are new: each weighs 200
    # Membership only: inside a shard the order is the plan's, which follows load order.
    results = {tuple(frozenset(s.id for s in shard_plan(plan_of(list(order)), Shard(i, 3), durations))
                     for i in (1, 2, 3))
               for order in itertools.islice(itertools.permutations(ids), 0, 5000, 97)}
    assert len(results) == 1
    (shards,) = results
    assert sorted(x for shard in shards for x in shard if x != CANARY) == sorted(ids[1:])
    # b (300), then c, d, e, f, g (200 each, by id), then a (100), each to the least-loaded shard (ties: the
    # lower index): b→1, c→2, d→3, e→2, f→3, g→1, a→2.
    assert shards == (frozenset({CANARY, "b", "g"}), frozenset({CANARY, "a", "c", "e"}),
                      frozenset({CANARY, "d", "f"}))


def test_cli_refuses_a_bad_shard_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--shard", "4/3"]) == 2
    assert "--shard 4/3" in capsys.readouterr().err
    assert main(["run", "--shard-durations", "x.json"]) == 2
    assert "--shard-durations" in capsys.readouterr().err


def test_cli_refuses_jobs_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--jobs", "0"])
    assert exc.value.code == 2
    assert "--jobs" in capsys.readouterr().err


def loaded() -> list[S]:
    return [S("b", ["fast"]), S("a", ["slow"]), S(CANARY, ["fast", "slow"]), S("c", ["fast", "nightly"])]


def test_explicit_ids_win_over_the_profile_and_keep_load_order() -> None:
    chosen = select(loaded(), "slow", ["c", "b"])
    assert [s.id for s in chosen] == ["b", "c"]
    assert [s.id for s in select(loaded(), "fast", ["a", CANARY, "a"])] == [CANARY, "a"]


def test_unknown_ids_are_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        select(loaded(), "fast", ["zz", "a", "yy"])
    assert str(err.value) == "unknown scenario id(s): zz, yy; known ids: a, b, c, canary"


def test_profile_all_selects_every_scenario_with_the_canary_first() -> None:
    assert [s.id for s in select(loaded(), "all", [])] == [CANARY, "b", "a", "c"]


def test_a_profile_selects_its_members_only() -> None:
    assert [s.id for s in select(loaded(), "slow", [])] == [CANARY, "a"]
    assert [s.id for s in select(loaded(), "nightly", [])] == ["c"]


def test_an_empty_profile_is_refused_with_the_profiles_there_are() -> None:
    with pytest.raises(ConfigError) as err:
        select(loaded(), "smoke", [])
    assert str(err.value) == "no scenario is in profile 'smoke'; profiles: all, fast, nightly, slow"


def test_a_scenario_without_profiles_is_in_every_profile() -> None:
    scenarios = [*loaded(), S("mine", [])]
    assert [s.id for s in select(scenarios, "nightly", [])] == ["c", "mine"]
    assert [s.id for s in select(scenarios, "fast", [])] == [CANARY, "b", "c", "mine"]
    assert [s.id for s in select([S("mine", [])], "smoke", [])] == ["mine"]
    assert in_profile(S("mine", []), "anything") and not in_profile(S("b", ["fast"]), "slow")
    assert in_profile(S("b", ["fast"]), "all")


@dataclass
class T:
    id: str
    title: str
    profiles: list[str] = field(default_factory=lambda: ["fast"])


def titled() -> list[T]:
    return [T("b-lock", "a lock test"), T(CANARY, "is it alive"), T("c-thread", "threads", ["slow"]),
            T("d-reply", "a reply with a LOCK")]


def test_keywords_narrow_the_profile_over_ids_and_titles() -> None:
    assert [s.id for s in select(titled(), "fast", [], ["lock"])] == ["b-lock", "d-reply"]
    assert [s.id for s in select(titled(), "fast", [], ["not lock"])] == [CANARY]
    assert [s.id for s in select(titled(), "all", [], ["thread", "alive"])] == [CANARY, "c-thread"]
    assert [s.id for s in select(titled(), "fast", ["c-thread", "b-lock"], ["lock"])] == ["b-lock"]


def test_keywords_that_pick_nothing_are_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError) as err:
        select(titled(), "fast", [], ["thread"])
    assert str(err.value) == ("no scenario of profile 'fast' matches -k 'thread' "
                              "(add --profile all to search every scenario)")
    with pytest.raises(ConfigError) as err:
        select(titled(), "all", [], ["nope", "none"])
    assert str(err.value) == "no scenario of profile 'all' matches -k 'nope' -k 'none'"
    with pytest.raises(ConfigError) as err:
        select(titled(), "fast", ["c-thread", CANARY], ["lock"])
    assert str(err.value) == "no scenario of --scenario c-thread canary matches -k 'lock'"
    with pytest.raises(ConfigError):  # an untitled scenario is matched by its id alone
        select([S("a")], "fast", [], ["xx"])


def test_a_bad_keyword_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as err:
        select(titled(), "fast", [], ["lock", "not"])
    assert str(err.value) == "-k 'not': pattern ends where a word or '(' was expected"


def test_picked_marks_without_refusing() -> None:
    assert picked(titled(), "smoke", [], []) == []
    assert [s.id for s in picked(titled(), "fast", [], ["zzz"])] == []
    assert [s.id for s in picked(titled(), "fast", [], [])] == [CANARY, "b-lock", "d-reply"]


def test_a_scenario_without_steps_does_not_run_alone() -> None:
    assert not runs_alone(object())
    assert not runs_alone(S("x", steps=[object()]))


def test_shard_messages_name_what_was_given() -> None:
    with pytest.raises(ConfigError) as err:
        parse_shard("2-5")
    assert str(err.value) == "--shard expects I/N (e.g. 2/5), got '2-5'"
    with pytest.raises(ConfigError) as err:
        parse_shard("6/5")
    assert str(err.value) == "--shard 6/5: I must be between 1 and N (N >= 1)"
    assert str(parse_shard("2/5")) == "2/5"
    assert parse_shard("10/12") == Shard(10, 12)


def test_shards_are_values() -> None:
    shard = Shard(1, 2)
    assert {shard: "x"}[Shard(1, 2)] == "x"
    with pytest.raises(AttributeError):
        shard.index = 2  # type: ignore[misc]


def test_durations_of_scenarios_not_in_the_plan_are_ignored() -> None:
    plan = plan_of([CANARY, "a", "b", "c"])
    # Only "c" has a known duration here, so the others weigh the same as it: by id, least loaded first.
    durations = {"c": 100.0, "gone": 1_000_000.0, CANARY: 1_000_000.0}
    shards = [[s.id for s in shard_plan(plan, Shard(i, 2), durations)] for i in (1, 2)]
    assert shards == [[CANARY, "a", "c"], [CANARY, "b"]]


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    plan = plan_of([CANARY, "a", "b", "n"])
    # Known 100 and 300: the new "n" weighs 200, so a (100) joins n's shard, not b's (300).
    durations = {"a": 100.0, "b": 300.0}
    shards = [[s.id for s in shard_plan(plan, Shard(i, 2), durations)] for i in (1, 2)]
    assert shards == [[CANARY, "b"], [CANARY, "a", "n"]]


def test_without_durations_ids_are_dealt_round_robin_in_id_order() -> None:
    plan = plan_of([CANARY, "e", "d", "c", "b", "a"])
    shards = [[s.id for s in shard_plan(plan, Shard(i, 3))] for i in (1, 2, 3)]
    assert shards == [[CANARY, "d", "a"], [CANARY, "e", "b"], [CANARY, "c"]]
    assert [[s.id for s in shard_plan(plan, Shard(i, 3), {})] for i in (1, 2, 3)] == shards
