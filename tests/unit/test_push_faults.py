"""Push fault rules (`target: push`, issue 33): what a rule may say, which pushed transaction it acts on
(qa.harness.push_faults), what the application-service endpoint does with it (a held-back push, the same transaction
put again after the bot's 200) and how a scenario states them: validation naming the field, the `appservice` need
that makes every other bot skip, and the hits filed with the fault proxy's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from qa.harness.botfile import builtin_bot_file, load_bot_file
from qa.harness.capabilities import missing, skip_reason
from qa.harness.fault_rules import FaultRule
from qa.harness.push_faults import PushFaults, event_matches, push_matches
from qa.homeserver import appservice_host
from qa.homeserver.appservice_host import AppserviceHost
from qa.kernel.errors import ConfigError
from qa.scenario.faults_served import uses_fault_proxy
from qa.scenario.loader import load_scenario
from tests.unit.test_appservice import _stand_in_bot

REPO = Path(__file__).resolve().parents[2]
MESSAGE = {"type": "m.room.message", "room_id": "!r", "content": {"msgtype": "m.text", "body": "pushed again: hi"}}


def rule(**fields: Any) -> FaultRule:
    return FaultRule.model_validate({"name": "r", "target": "push", **fields})


def errors(fields: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as err:
        FaultRule.model_validate({"name": "r", **fields})
    return [(e["loc"], e["msg"].removeprefix("Value error, ")) for e in err.value.errors()]


# --- what a rule may say --------------------------------------------------------------------------------------


def test_a_push_rule_delays_or_redelivers_and_says_so() -> None:
    again = rule(event_type="m.room.message", body="pushed again", redeliver=2, nth=2, count=2)
    assert (again.action, again.describe()) == (
        "redeliver", "push m.room.message /pushed again/ #2-#3: redelivered 2 more time(s) under the same "
        "transaction id after the bot's 200")
    late = rule(delay_ms=1500, count="all")
    assert (late.action, late.describe()) == ("delay", "push any #1+: delayed 1500 ms")
    assert rule(body="x", delay_ms=1).describe() == "push /x/ #1: delayed 1 ms"
    # A client rule reads as before.
    client = FaultRule.model_validate({"name": "c", "path": "/sync", "delay_ms": 5})
    assert client.target == "client" and client.describe() == "any /sync #1: delayed 5 ms"
    assert FaultRule.model_validate({"name": "c", "target": "client", "path": "/sync", "delay_ms": 5}) == client


@pytest.mark.parametrize("name", ["method", "path", "status", "drop", "stall_ms", "hold_ms", "rewrite_to",
                                  "hold_to_device", "errcode", "error", "retry_after_ms"])
def test_a_client_only_field_on_a_push_rule_is_named(name: str) -> None:
    value = {"method": "PUT", "path": "/x", "status": 500, "drop": "before", "stall_ms": 5, "hold_ms": 5,
             "rewrite_to": "/y", "hold_to_device": "m.x", "errcode": "M_X", "error": "e",
             "retry_after_ms": 5}[name]
    found = errors({"target": "push", "redeliver": 1, name: value})
    assert ((name,), f"{name} is for a client rule; a push rule (target: push) takes delay_ms or redeliver, matched "
            "by event_type, body, nth and count") in found


@pytest.mark.parametrize(("name", "value"), [("redeliver", 1), ("event_type", "m.room.message"), ("body", "x")])
def test_a_push_only_field_on_a_client_rule_is_named(name: str, value: Any) -> None:
    assert errors({"path": "/x", "delay_ms": 5, name: value}) == [
        ((name,), f"{name} is for a push rule: give the rule `target: push` (the homeserver's transactions to an "
                  "application-service bot)")]


def test_a_push_rule_needs_exactly_one_of_its_actions_and_a_client_rule_its_path() -> None:
    assert errors({"target": "push"}) == [((), "a push fault rule needs exactly one of delay_ms, redeliver (found: "
                                               "none)")]
    assert errors({"target": "push", "delay_ms": 1, "redeliver": 1}) == [
        ((), "a push fault rule needs exactly one of delay_ms, redeliver (found: delay_ms, redeliver)")]
    assert errors({"status": 500}) == [((), "a client fault rule needs `path` (a regex on the bot's request path)")]
    assert errors({"target": "push", "redeliver": 0})[0][0] == ("redeliver",)
    assert errors({"target": "push", "redeliver": 11})[0][0] == ("redeliver",)
    assert rule(redeliver=10).redeliver == 10
    assert errors({"target": "pull", "redeliver": 1})[0][0] == ("target",)
    assert errors({"target": "push", "redeliver": 1, "event_type": "M.Bad"})[0][0] == ("event_type",)


def test_yaml_s_on_is_refused_with_the_field_to_write_instead() -> None:
    # PyYAML reads an unquoted `on:` key as the boolean true.
    assert errors({True: "push", "redeliver": 1}) == [
        ((), "`on` is read as YAML's boolean true: write `target: push` (or `target: client`)")]


# --- which transaction a rule acts on -------------------------------------------------------------------------


def test_an_event_matches_by_type_and_body_each_optional() -> None:
    assert event_matches(rule(redeliver=1), MESSAGE) and event_matches(rule(redeliver=1), {})
    assert event_matches(rule(redeliver=1, event_type="m.room.message"), MESSAGE)
    assert not event_matches(rule(redeliver=1, event_type="m.room.member"), MESSAGE)
    assert event_matches(rule(redeliver=1, body="^pushed again"), MESSAGE)
    assert not event_matches(rule(redeliver=1, body="held back"), MESSAGE)
    assert not event_matches(rule(redeliver=1, event_type="m.room.message", body="held"), MESSAGE)
    assert not event_matches(rule(redeliver=1, event_type="m.room.member", body="pushed"), MESSAGE)
    # No body to search: a body rule does not match.
    assert not event_matches(rule(redeliver=1, body="x"), {"type": "m.room.message", "content": "x"})
    assert not event_matches(rule(redeliver=1, body="x"), {"type": "m.room.message", "content": {"body": 7}})
    assert not event_matches(rule(redeliver=1, body="."), {"type": "m.room.message"})
    assert not event_matches(rule(redeliver=1), ["not", "an", "event"])


def test_a_transaction_matches_when_one_of_its_events_does_and_never_a_client_rule() -> None:
    join = {"type": "m.room.member", "content": {"membership": "join"}}
    typed = rule(redeliver=1, event_type="m.room.message")
    assert push_matches(typed, [join, MESSAGE]) and push_matches(typed, [MESSAGE, join])
    assert not push_matches(typed, [join]) and not push_matches(typed, [])
    client = FaultRule.model_validate({"name": "c", "path": ".", "delay_ms": 1})
    assert not push_matches(client, [MESSAGE])
    assert not client.matches("PUT", "/x") or client.path is not None
    assert not rule(redeliver=1).matches("PUT", "/_matrix/app/v1/transactions/1")


def test_rules_count_every_transaction_they_match_and_the_first_covering_one_acts() -> None:
    faults = PushFaults()
    first = rule(name="first", event_type="m.room.message", nth=2, redeliver=1)
    second = rule(name="second", delay_ms=5, count=2)
    client = FaultRule.model_validate({"name": "c", "path": ".", "delay_ms": 1})
    faults.install([client, first, second], "scenario", 12.34)
    assert faults.rules == [first, second]
    assert faults.installed == [{"at": 12.3, "by": "scenario", "rules": [
        {"name": "first", "what": first.describe()}, {"name": "second", "what": second.describe()}]}]
    join = [{"type": "m.room.member"}]
    assert faults.decide([MESSAGE]) == (second, 1)  # first counts it (#1) but acts from #2 on
    assert faults.decide(join) == (second, 2)
    assert faults.decide([MESSAGE]) == (first, 2)  # first acts; second counts its #4 without acting
    assert faults.decide(join) is None
    assert faults.seen == {"first": 2, "second": 4}
    faults.install([second], "set_faults", 20.0)  # counting afresh
    assert faults.seen == {} and faults.decide(join) == (second, 1) and len(faults.installed) == 2
    assert faults.installed[-1]["by"] == "set_faults" and faults.problems == []


def test_no_rules_installed_acts_on_nothing() -> None:
    fresh = PushFaults()
    assert fresh.decide([MESSAGE]) is None
    assert (fresh.rules, fresh.seen, fresh.installed, fresh.problems) == ([], {}, [], [])


def test_a_body_pattern_that_runs_out_of_time_is_no_match_and_is_said() -> None:
    faults = PushFaults()
    slow = rule(name="slow", body="(a+)+$", redeliver=1)
    faults.install([slow, rule(name="any", delay_ms=1)], "scenario", 0.0)
    import qa.patterns

    def timeout(*_: Any, **__: Any) -> Any:
        raise qa.patterns.PatternTimeout("regular expression /(a+)+$/ took over 0.25s")

    slow.body._compiled = type("P", (), {"search": timeout})()  # type: ignore[union-attr]
    chosen = faults.decide([{"type": "m.room.message", "content": {"body": "aaaa!"}}])
    assert chosen is not None and chosen[0].name == "any"
    assert faults.problems == ["fault rule 'slow': regular expression /(a+)+$/ took over 0.25s"]
    assert isinstance(qa.patterns.PatternTimeout("x"), ConfigError)


def test_a_hit_is_a_put_of_the_transaction_in_the_fault_proxy_s_shape() -> None:
    again = rule(name="again", redeliver=2)
    assert PushFaults.hit(again, 3, "mqa-7", 100.06) == {
        "rule": "again", "occurrence": 3, "action": "redeliver", "method": "PUT",
        "path": "/_matrix/app/v1/transactions/mqa-7", "status": None, "startedAt": 100.1, "endedAt": None,
        "what": again.describe()}


# --- the endpoint ---------------------------------------------------------------------------------------------


async def test_the_endpoint_holds_back_and_redelivers_what_the_rules_pick(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(appservice_host, "RETRY_S", 0.01)
    host = AppserviceHost(tmp_path, "hs")

    async def register(base_url: str, localpart: str) -> dict[str, Any]:
        return {"user_id": f"@{localpart}:hs"}

    monkeypatch.setattr(host, "_register", register)
    faults = PushFaults()
    faults.install([rule(name="again", body="pushed again", redeliver=2), rule(name="late", body="held", delay_ms=300)],
                   "scenario", 0.0)
    seen: list[tuple[str, str, list[Any]]] = []  # (txn id, Authorization, events)
    lease = await host.open_lease("http://hs", "bot", push_faults=faults)
    bot = await _stand_in_bot(lease.as_port, seen, status=[])
    try:
        invite = {"type": "m.room.member", "room_id": "!r", "state_key": lease.user_id}
        late = {**MESSAGE, "content": {"body": "held back"}}
        for txn_id, events in (("h1", [invite]), ("h2", [MESSAGE]), ("h3", [late]), ("h4", [MESSAGE])):
            host.routes.split(events)  # the room is learnt from the invite, as a push would teach it
            lease.queue.put_nowait((txn_id, events, 0.0))
        await host.wait_push_hits(lease.key, lambda: len(lease.hits) == 3 and lease.hits[-1]["endedAt"] is not None,
                                  30.0)
        await asyncio.wait_for(_delivered(lease, 4), 30.0)
        # The same id and body three times (once, then twice more), in order; the held one after them.
        assert [s[0] for s in seen] == ["h1", "h2", "h2", "h2", "h3", "h4"]
        assert seen[1][2] == seen[2][2] == seen[3][2] == [MESSAGE]
        hits = [(h["rule"], h["action"], h["path"], h["status"]) for h in lease.hits]
        assert hits == [("again", "redeliver", "/_matrix/app/v1/transactions/h2", 200),
                        ("again", "redeliver", "/_matrix/app/v1/transactions/h2", 200),
                        ("late", "delay", "/_matrix/app/v1/transactions/h3", None)]
        assert lease.hits[2]["endedAt"] - lease.hits[2]["startedAt"] >= 300 - 1
        # h4 is the rule's second match: `again` acts on its first only.
        assert faults.seen == {"again": 2, "late": 1}
        await host.set_push_faults(lease.key, [rule(name="off", event_type="m.nothing", delay_ms=1)])
        assert faults.rules[0].name == "off" and faults.seen == {}
        with pytest.raises(TimeoutError):
            await host.wait_push_hits(lease.key, lambda: len(lease.hits) > 3, 0.05)
        record = await host.release(lease.key)
        assert record["faultHits"] == lease.hits and record["delivered"] == 4
    finally:
        await bot.cleanup()
        await host.close()


async def _delivered(lease: Any, count: int) -> None:
    while lease.delivered < count:
        await asyncio.sleep(0.01)


# --- scenarios ------------------------------------------------------------------------------------------------


def test_the_scenario_needs_an_appservice_bot_and_any_other_skips_saying_why(tmp_path: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "matrix-appservice-push-redelivered.yaml")
    assert ("appservice", "faults[0] target: push") in list(scenario.implied_needs())
    agent = builtin_bot_file()
    reason = skip_reason(agent.name, missing(scenario, agent.abilities()))
    assert reason is not None and "'appservice' (faults[0] target: push)" in reason
    service = load_bot_file(REPO / "tests" / "bots" / "mautrix-appservice-bot.yaml")
    assert "appservice" in service.abilities() and service.has("appservice")
    assert missing(scenario, service.abilities()) == []
    # Push rules alone need no fault proxy in front of the bot.
    assert not uses_fault_proxy(scenario)


def _scenario(tmp_path: Path, faults: str, steps: str) -> Any:
    path = tmp_path / "s.yaml"
    path.write_text(f"id: s\ntitle: t\nfaults: {faults}\nsteps:\n{steps}")
    return load_scenario(path)


def test_a_set_faults_step_with_a_push_rule_needs_an_appservice_bot(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "[]", "  - set_faults: {rules: [{name: a, target: push, redeliver: 1}]}\n")
    assert ("appservice", "step 1 (set_faults): rules[0] target: push") in list(s.implied_needs())
    s = _scenario(tmp_path, "[]", "  - set_faults: {rules: [{name: a, path: x, delay_ms: 1}]}\n")
    assert all(c != "appservice" for c, _ in s.implied_needs()) and uses_fault_proxy(s)
    s = _scenario(tmp_path, "[{name: c, path: x, delay_ms: 1}, {name: p, target: push, delay_ms: 1}]",
                  "  - send: {as: driver, body: hi}\n")
    assert uses_fault_proxy(s)


@pytest.mark.parametrize("field", ["retried_after_ms: 5", "retried_within_ms: 5", "ending: released"])
def test_retries_are_no_question_for_a_push_rule(tmp_path: Path, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        _scenario(tmp_path, "[{name: p, target: push, redeliver: 1}]", f"  - expect_faults: {{rule: p, {field}}}\n")
    name = field.split(":")[0]
    assert f"steps[0].expect_faults.{name}: {name} is about the bot's retries of its own requests; 'p' is a push " \
        "rule (target: push), whose hits are the harness's deliveries" in str(err.value)
    _scenario(tmp_path, "[{name: p, target: push, redeliver: 1}]", "  - expect_faults: {rule: p, hits: 2}\n")


def test_an_appservice_bot_file_does_not_claim_the_capability(tmp_path: Path) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text("name: b\ncommand: [x, '{as_port}']\nappservice: {}\ncapabilities: [threads, appservice]\n")
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert "capabilities: appservice is not claimed in capabilities: a bot file with `appservice:` has it" \
        in str(err.value)


async def test_push_hits_are_filed_with_the_fault_proxy_s(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    from qa.report.summary import ScenarioResult
    from qa.scenario.faults_served import file_fault_hits

    again = rule(name="again", redeliver=1)
    hit = {**PushFaults.hit(again, 1, "tok-abcdefghijkl", 5.0), "status": 200, "endedAt": 6.0}
    pushed = {"installed": [{"at": 1.0, "by": "scenario", "rules": [{"name": "again", "what": again.describe()}]}],
              "hits": [hit], "problems": []}
    scenario_dir = tmp_path / "scenarios" / "s"
    scenario_dir.mkdir(parents=True)
    result = ScenarioResult(id="s", title="t", status="pass")
    service = SimpleNamespace(artifact=lambda: pushed)
    await file_fault_hits(None, service, None, scenario_dir, result, ["tok-abcdefghijkl"])
    assert result.faultHits == [{"source": "push", "rule": "again", "action": "redeliver", "method": "PUT",
                                 "path": "/_matrix/app/v1/transactions/tok-abcdefghijkl", "status": 200,
                                 "what": again.describe()}]
    assert result.artifacts["faults"] == "scenarios/s/fault-hits.json"
    written = json.loads((scenario_dir / "fault-hits.json").read_text())
    assert written["push"]["hits"][0]["path"] == "/_matrix/app/v1/transactions/[REDACTED]"  # redacted like any
    # No push rule and no hit: nothing filed (a bot that is an application service, in a scenario without faults).
    quiet = ScenarioResult(id="q", title="t", status="pass")
    empty = SimpleNamespace(artifact=lambda: {"installed": [{"at": 1.0, "by": "scenario", "rules": []}], "hits": [],
                                              "problems": []})
    await file_fault_hits(None, empty, None, tmp_path / "scenarios" / "q", quiet, [])
    assert quiet.faultHits == [] and "faults" not in quiet.artifacts
