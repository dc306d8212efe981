"""qa.evidence.faults without servers: what a fault step expects, when its evidence is complete, and what is
wrong with the hits and the retries after them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from qa.evidence.faults import (
    complete,
    expectation,
    fault_problems,
    hit_lines,
    provider_hits,
    provider_requests,
    summary,
)


def test_the_expectation_in_words() -> None:
    assert expectation("r", "homeserver", None, None) == "at least 1 hit(s) of homeserver fault rule 'r'"
    assert expectation("r", "provider", 3, 250) == ("exactly 3 hit(s) of provider fault rule 'r', each retried no "
                                                    "sooner than 250 ms later")
    assert expectation("r", "homeserver", None, 0).endswith("no sooner than 0 ms later")


@dataclass
class Entry:
    method: str
    path: str
    started_at: float
    finished_at: float | None
    status: int | None
    rule: str | None
    is_chat: bool = True
    fault: str | None = None


def test_provider_requests_are_its_chat_requests_and_hits_the_finished_faulty_ones() -> None:
    journal = [Entry("POST", "/v1/chat", 1.0, 2.0, 503, "slow", fault="status"),
               Entry("GET", "/v1/models", 0.5, 0.6, 200, None, is_chat=False),
               Entry("POST", "/v1/chat", 3.0, None, None, "slow", fault="status"),
               Entry("POST", "/v1/chat", 4.0, 5.0, 200, "slow"), Entry("POST", "/v1/chat", 6.0, 7.0, 503, "other",
                                                                        fault="status")]
    requests = provider_requests(journal)
    assert requests[0] == {"method": "POST", "path": "/v1/chat", "startedAt": 1.0, "endedAt": 2.0, "status": 503,
                           "rule": "slow", "action": "status"}
    assert len(requests) == 4 and requests[2]["action"] is None
    assert provider_hits(requests, "slow") == [requests[0]]


def test_complete_needs_enough_hits_and_a_gap_after_each_when_asked() -> None:
    hits = [{"h": 1}, {"h": 2}]
    assert complete(hits, None, None) and complete(hits, None, 2) and complete(hits[:1], None, None)
    assert not complete(hits, None, 3) and not complete([], None, None)
    assert complete(hits, [10.0, 0.0], 2) and not complete(hits, [10.0, None], 2)


def hit(action: str = "status", status: int | None = 502) -> dict[str, Any]:
    return {"method": "GET", "path": "/sync", "action": action, "status": status}


def test_hit_lines_show_the_gap_only_when_retries_are_checked() -> None:
    hits = [hit(), hit("drop", None)]
    assert hit_lines(hits, [None, None], None) == ["hit 1: GET /sync status status=502", "hit 2: GET /sync drop"]
    assert hit_lines(hits, [120.5, None], 100) == [
        "hit 1: GET /sync status status=502, next matching request 120.5 ms later",
        "hit 2: GET /sync drop, no later matching request"]


def test_hit_lines_take_one_gap_per_hit() -> None:
    with pytest.raises(ValueError):
        hit_lines([hit()], [], None)


def test_fault_problems_count_hits_and_early_retries() -> None:
    assert fault_problems("r", [hit()], [None], None, None) == []
    assert fault_problems("r", [], [], None, None) == ["0 hit(s) of 'r'"]
    assert fault_problems("r", [hit(), hit()], [None, None], 2, None) == []
    assert fault_problems("r", [hit(), hit(), hit()], [None] * 3, 2, None) == ["3 hit(s) of 'r'"]
    assert fault_problems("r", [hit()], [None], 2, None) == ["1 hit(s) of 'r'"]
    assert fault_problems("r", [hit(), hit()], [100.0, 250.0], None, 100) == []
    assert fault_problems("r", [hit(), hit()], [99.9, None], None, 100) == [
        "retried sooner than 100 ms (or never) after 2 hit(s)"]


def test_summary_shows_the_gaps_only_when_asked() -> None:
    assert summary("r", [hit()], [None], None) == "1 hit(s) of r"
    assert summary("r", [hit(), hit()], [120.4, None], 100) == "2 hit(s) of r; retried after 120 ms"
    assert summary("r", [hit(), hit()], [120.4, 80.6], 0) == "2 hit(s) of r; retried after 120, 81 ms"


def test_bounded_backoff_and_how_held_requests_ended() -> None:
    from qa.evidence.faults import bound_problems, complete, expectation

    held = [{"ending": "client-gave-up"}, {"ending": "released"}]
    assert bound_problems(held, [100.0, 4000.0], 5000, None) == []
    assert bound_problems(held, [5000.0, 5000.0], 5000, None) == []  # the bound itself is within it
    assert bound_problems(held, [100.0, 5001.0], 5000, None) == [
        "retried later than 5000 ms (or never) after 1 hit(s)"]
    assert bound_problems(held, [None, 10.0], 5000, None) == ["retried later than 5000 ms (or never) after 1 hit(s)"]
    assert bound_problems(held, [None, None], None, "client-gave-up") == ["1 hit(s) ended otherwise: released"]
    assert bound_problems(held[:1], [None], None, "client-gave-up") == []
    assert bound_problems(held, [None, None], None, "timed-out") == [
        "2 hit(s) ended otherwise: client-gave-up, released"]
    assert bound_problems([{}], [None], None, "released") == ["1 hit(s) ended otherwise: None"]
    # A held request still open is not complete when its ending is asked for.
    assert complete([{}], None, 1) and not complete([{}], None, 1, ended=True)
    assert complete(held, None, 2, ended=True)
    assert expectation("r", "homeserver", 1, None, 5000, "client-gave-up") == (
        "exactly 1 hit(s) of homeserver fault rule 'r', each retried within 5000 ms, each held request ended: "
        "client-gave-up")
    assert expectation("r", "homeserver", None, 40, None, None) == (
        "at least 1 hit(s) of homeserver fault rule 'r', each retried no sooner than 40 ms later")
    lines = hit_lines([{"method": "GET", "path": "/sync", "action": "hold", "status": None,
                        "ending": "client-gave-up"}], [None], None)
    assert lines == ["hit 1: GET /sync hold, ended: client-gave-up"]


def test_a_held_request_says_which_side_ended_it() -> None:
    from qa.evidence.faults import hang_ended_by

    closed = "hang: the connection closed while the request was held"
    assert hang_ended_by(closed, 100.0, 1100.0, None) == "hang: the bot gave up waiting after 1000 ms"
    assert hang_ended_by(closed, 100.0, 1100.0, 5000.0) == "hang: the bot gave up waiting after 1000 ms"
    assert hang_ended_by(closed, 100.0, 1100.0, 50.0) == "hang: the bot gave up waiting after 1000 ms"
    by_us = "hang: ended by the harness, which stopped the bot after the request was held {} ms (the bot had not " \
        "given up)"
    assert hang_ended_by(closed, 100.0, 15100.0, 15000.0) == by_us.format(15000)
    assert hang_ended_by(closed, 100.0, 15100.0, 15100.0) == by_us.format(15000)
    assert hang_ended_by(closed, 100.0, 15100.0, 100.0) == by_us.format(15000)
    assert hang_ended_by(closed, 100.0, 50.0, 60.0) == "hang: the bot gave up waiting after 0 ms"
    assert hang_ended_by(closed, 100.0, None, 60.0) == closed
    assert hang_ended_by("HTTP 500", 100.0, 200.0, 150.0) == "HTTP 500"


def test_a_message_landed_while_failing_only_before_the_last_hit_ended() -> None:
    from qa.evidence.faults import landed_while_failing

    hits = [{"endedAt": 100.0}, {"endedAt": 300.0}, {"endedAt": 200.0}]  # the last to end is not the last listed
    assert landed_while_failing(hits, 50.0, "during", began_at=0.0) is None
    assert landed_while_failing(hits, 300.0, "during", began_at=0.0) is None  # at the very end: still in its way
    assert landed_while_failing(hits, 250.0, "during", began_at=0.0) is None  # after some hits, before the last ended
    assert landed_while_failing(hits, 345.4, "during", began_at=0.0) == \
        "'during' reached the homeserver 45 ms after the rule's last hit had ended"
    # A hit still under way: whatever the others did, the message came while the faults were in its way.
    assert landed_while_failing([{"endedAt": 100.0}, {"endedAt": None}], 5000.0, "during", began_at=0.0) is None
    assert landed_while_failing([], 50.0, "during", began_at=0.0) == "the rule was never hit"
    assert landed_while_failing(hits, None, "x", began_at=0.0) == "'x' has no time it reached the homeserver"


def test_a_message_sent_before_the_rule_was_installed_did_not_land_while_it_failed() -> None:
    """The reviewer's case: a message on the homeserver before set_faults installed the rule met no fault, however
    long the hits went on after it."""
    from qa.evidence.faults import landed_while_failing

    hits = [{"startedAt": 5000.0, "endedAt": 7500.0}]
    assert landed_while_failing(hits, 100.0, "during", began_at=4000.0) == \
        "'during' reached the homeserver 3900 ms before the rule was installed"
    assert landed_while_failing(hits, 4000.0, "during", began_at=4000.0) is None  # at the moment it was installed
    assert landed_while_failing(hits, 6000.0, "during", began_at=4000.0) is None
    assert landed_while_failing(hits, 6000.0, "during", began_at=None) == "the rule has no time it was installed"


class _Proxy:
    """The fault proxy as expect_faults reads it: its hits and requests, and a wait that finds them all in."""

    def __init__(self, hits: list[dict[str, Any]], installed_at: float = 500.0,
                 later: list[dict[str, Any]] | None = None) -> None:
        self.hits, self.requests, self.later = hits, [], list(later or [])
        self.installed = [{"at": 0.0, "by": "scenario", "rules": []},
                          {"at": installed_at, "by": "set_faults", "rules": [{"name": "stalled", "what": "stall"}]}]

    async def wait_until(self, condition: Any, timeout_s: float) -> None:
        while not condition():  # each `later` hit comes while the step waits; then the wait runs out
            if not self.later:
                raise TimeoutError
            self.hits.append(self.later.pop(0))


async def test_expect_faults_says_whether_the_message_landed_while_the_hits_were_under_way() -> None:
    from types import SimpleNamespace

    from qa.harness.fault_rules import FaultRule
    from qa.scenario.context import Ref
    from qa.scenario.steps.faults import ExpectFaults

    rule = FaultRule(name="stalled", path="/sync$", stall_ms=2500)
    hit = {"rule": "stalled", "method": "GET", "path": "/sync", "action": "stall", "status": None,
           "startedAt": 1000.0, "endedAt": 3500.0}
    step = ExpectFaults(rule="stalled", hits=1, landed_during="during")

    def ctx(landed: float, installed_at: float = 500.0) -> Any:
        return SimpleNamespace(scenario=SimpleNamespace(faults=[rule], steps=[step]),
                               fault_proxy=_Proxy([hit], installed_at),
                               appservice=None, step_timeout_cap_s=None,
                               refs={"during": Ref("!r", "$during", None, 900.0, landed_mono_ms=landed)})

    assert await step.run(ctx(1200.0)) == \
        "1 hit(s) of stalled; 'during' reached the homeserver while they were under way"
    said = await step.run(ctx(3600.0))
    assert said == ("1 hit(s) of stalled; NOT CHECKED: 'during' reached the homeserver 100 ms after the rule's last "
                    "hit had ended: the faults were not in its way"), said
    # Sent before set_faults installed the rule (at 1300 here): it met no fault, whatever came after.
    said = await step.run(ctx(1200.0, installed_at=1300.0))
    assert said == ("1 hit(s) of stalled; NOT CHECKED: 'during' reached the homeserver 100 ms before the rule was "
                    "installed: the faults were not in its way"), said
    # Without the field: nothing said about any message.
    assert await ExpectFaults(rule="stalled", hits=1).run(ctx(3600.0)) == "1 hit(s) of stalled"


async def test_expect_faults_with_landed_during_waits_for_a_hit_after_the_message() -> None:
    """A rule with no end (`count: all`) is a gate: the step waits for a failure after the message landed, instead
    of judging the hits that came before it (the scenario lifts the rule only after the step)."""
    from types import SimpleNamespace

    from qa.harness.fault_rules import FaultRule
    from qa.scenario.context import Ref
    from qa.scenario.steps.faults import ExpectFaults

    rule = FaultRule(name="stalled", path="/sync$", status=502, count="all")
    early, later = ({"rule": "stalled", "method": "GET", "path": "/sync", "action": "status", "status": 502,
                     "startedAt": start, "endedAt": start + 5.0} for start in (1000.0, 2000.0))
    step = ExpectFaults(rule="stalled", landed_during="during")
    ctx = SimpleNamespace(scenario=SimpleNamespace(faults=[rule], steps=[step]),
                          fault_proxy=_Proxy([early], 500.0, later=[later]), appservice=None, step_timeout_cap_s=None,
                          refs={"during": Ref("!r", "$during", None, 1500.0, landed_mono_ms=1500.0)})
    assert await step.run(ctx) == "2 hit(s) of stalled; 'during' reached the homeserver while they were under way"
