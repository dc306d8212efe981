"""qa.evidence.approvals without servers: the request's metadata and chunks, the bot's options, the outcome
and whether a refused command ran."""

from __future__ import annotations

from typing import Any

import pytest

from qa.evidence.approvals import (
    APPROVAL_KEY,
    OPTIONS,
    REQUIRED_APPROVAL_FIELDS,
    check_request_metadata,
    commands_run,
    decision_key,
    is_option,
    is_outcome,
    outcome_problems,
    request_or_turn_over,
    request_problems,
    thread_problems,
)

# The wire contract, written out: the bot's metadata key and the fields every request carries.
WIRE_KEY = "org.matrix_qa.approval"
GOOD = {"version": 1, "type": "approval.request", "kind": "exec", "state": "pending",
        "allowedDecisions": ["allow-once", "deny"], "id": "ap1", "command": "echo hi",
        "expiresAt": "2026-01-01T00:00:00Z"}


def test_the_contract_is_the_one_the_bot_writes() -> None:
    assert APPROVAL_KEY == WIRE_KEY
    assert {k: GOOD[k] for k in REQUIRED_APPROVAL_FIELDS} == REQUIRED_APPROVAL_FIELDS
    assert set(REQUIRED_APPROVAL_FIELDS) == {"version", "type", "kind", "state", "allowedDecisions"}


def chunk(event_id: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"body": "b"}
    if meta is not None:
        content[WIRE_KEY] = meta
    return {"event_id": event_id, "content": content}


def test_the_options_are_allow_once_then_deny() -> None:
    assert OPTIONS == ("✅", "❌")
    assert decision_key("allow-once") == "✅" and decision_key("deny") == "❌"


@pytest.mark.parametrize(("record", "ends"), [
    ({"type": "approval.request", "attempt": "a1"}, True), ({"type": "turn.end", "attempt": "a1"}, True),
    ({"type": "approval.request", "attempt": "a2"}, False), ({"type": "turn.start", "attempt": "a1"}, False)])
def test_the_wait_ends_on_the_request_or_the_end_of_its_turn(record: dict[str, Any], ends: bool) -> None:
    assert request_or_turn_over(record, {"a1"}) is ends


def test_complete_metadata_has_no_problem() -> None:
    assert check_request_metadata(GOOD, "echo") == []
    assert check_request_metadata(GOOD, None) == []


def test_metadata_problems_are_exact() -> None:
    assert check_request_metadata(None, None) == ["first chunk has no org.matrix_qa.approval metadata"]
    assert check_request_metadata("x", None) == ["first chunk has no org.matrix_qa.approval metadata"]
    bad = {**GOOD, "version": 2, "state": "done", "command": "", "expiresAt": 5}
    del bad["id"]
    assert check_request_metadata(bad, "rm") == [
        "version is 2, expected 1", "state is 'done', expected 'pending'", "id missing", "command missing",
        "expiresAt missing", "command '' does not contain 'rm'"]
    no_command = {k: v for k, v in GOOD.items() if k != "command"}
    assert check_request_metadata(no_command, "X") == ["command missing", "command None does not contain 'X'"]
    assert check_request_metadata({**GOOD, "allowedDecisions": ["deny"]}, None) == [
        "allowedDecisions is ['deny'], expected ['allow-once', 'deny']"]


def test_request_problems_check_chunks_and_the_split_as_asked() -> None:
    first = chunk("$1", GOOD)
    later = [chunk("$2"), chunk("$3", GOOD)]
    assert request_problems(first, later, None, "echo") == ["chunk $3 carries metadata"]
    assert request_problems(first, [chunk("$2")], True, None) == []
    assert request_problems(first, [], True, None) == ["the request was a single event, expected several chunks"]
    assert request_problems(first, [chunk("$2")], False, None) == [
        "the request was split into 2 chunks, expected one event"]
    assert request_problems(first, [], False, None) == []
    assert request_problems({"event_id": "$1"}, [], None, None) == [
        "first chunk has no org.matrix_qa.approval metadata"]


def reaction(sender: str = "@bot:hs", target: str = "$1", key: str = "✅", kind: str = "m.reaction"
             ) -> dict[str, Any]:
    return {"type": kind, "sender": sender, "content": {"m.relates_to": {"event_id": target, "key": key}}}


def test_an_option_is_the_bots_reaction_with_that_key_on_the_first_chunk() -> None:
    assert is_option(reaction(), "@bot:hs", "$1", "✅")
    assert not is_option(reaction(key="❌"), "@bot:hs", "$1", "✅")
    assert not is_option(reaction(sender="@u:hs"), "@bot:hs", "$1", "✅")
    assert not is_option(reaction(target="$2"), "@bot:hs", "$1", "✅")
    assert not is_option(reaction(kind="m.room.message"), "@bot:hs", "$1", "✅")
    assert not is_option({"type": "m.reaction", "sender": "@bot:hs"}, "@bot:hs", "$1", "✅")


def outcome(state: str, request: str = "$1", kind: str = "approval.resolution") -> dict[str, Any]:
    return chunk("$o", {"type": kind, "requestEventId": request, "state": state})


def test_the_outcome_is_the_resolution_of_that_request() -> None:
    assert is_outcome(outcome("approved"), "$1")
    assert not is_outcome(outcome("approved", request="$2"), "$1")
    assert not is_outcome(outcome("approved", kind="approval.request"), "$1")
    assert not is_outcome(chunk("$x"), "$1")


def test_outcome_problems_and_a_refused_command_that_ran() -> None:
    assert outcome_problems(outcome("approved"), "approved", ["exec.run a=1"]) == []
    assert outcome_problems(outcome("denied"), "denied", []) == []
    assert outcome_problems(outcome("expired"), "denied", ["exec.run a=1", "exec.run a=2"]) == [
        "outcome 'expired', expected 'denied'", "the command ran anyway: exec.run a=1"]


def test_commands_run_are_the_exec_runs_of_that_approval() -> None:
    records = [{"type": "exec.run", "approvalId": "a"}, {"type": "exec.run", "approvalId": "b"},
               {"type": "approval.request", "approvalId": "a"}]
    assert commands_run(records, "a") == [records[0]]


def test_the_decider_is_checked_when_the_step_names_one() -> None:
    decided = chunk("$o", {"type": "approval.resolution", "requestEventId": "$1", "state": "approved",
                           "decidedBy": "@driver:hs"})
    assert outcome_problems(decided, "approved", [], "@driver:hs") == []
    assert outcome_problems(decided, "approved", [], "@observer:hs") == [
        "decided by '@driver:hs', expected '@observer:hs'"]
    assert outcome_problems(outcome("expired"), "expired", [], None) == []


def test_every_event_of_the_approval_is_in_its_thread() -> None:
    def threaded(event_id: str, root: str | None, rel: str = "m.thread") -> dict[str, Any]:
        event = chunk(event_id)
        if root is not None:
            event["content"]["m.relates_to"] = {"rel_type": rel, "event_id": root}
        return event

    assert thread_problems([threaded("$a", "$root"), threaded("$b", "$root")], "$root") == []
    assert thread_problems([threaded("$a", "$root"), threaded("$b", None), threaded("$c", "$other"),
                            threaded("$d", "$root", rel="m.reference")], "$root") == [
        "$b is at the top level, not in the thread on $root",
        "$c is in the thread on $other, not in the thread on $root",
        "$d is at the top level, not in the thread on $root"]
