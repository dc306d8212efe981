"""Fault rules (qa.harness.fault_rules): which request a rule acts on, what it answers, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qa.harness.fault_rules import FaultRule, FaultState, check_unique, retry_gaps


def rule(**fields: object) -> FaultRule:
    return FaultRule.model_validate({"name": "r", "path": "/send/", "status": 429, **fields})


def test_nth_and_count_pick_a_window_of_matching_requests() -> None:
    state = FaultState()
    state.install([rule(nth=2, count=2)])
    hits = [state.decide("PUT", f"/_matrix/client/v3/rooms/!a/send/m.room.message/t{i}") for i in range(5)]
    assert [h[1] if h else None for h in hits] == [None, 2, 3, None, None]


def test_count_all_acts_on_every_match_from_nth() -> None:
    state = FaultState()
    state.install([rule(nth=3, count="all")])
    assert [state.decide("PUT", "/send/x") is not None for _ in range(5)] == [False, False, True, True, True]


def test_method_and_path_must_both_match() -> None:
    state = FaultState()
    state.install([rule(method="PUT", path=r"/send/m\.room\.message/")])
    assert state.decide("GET", "/rooms/!a/send/m.room.message/1") is None
    assert state.decide("PUT", "/rooms/!a/send/m.reaction/1") is None
    assert state.decide("put", "/rooms/!a/send/m.room.message/1") is not None


def test_every_rule_counts_its_matches_even_when_an_earlier_rule_acted() -> None:
    state = FaultState()
    state.install([rule(name="first", count=1), rule(name="second", nth=2, status=500)])
    first = state.decide("PUT", "/send/1")
    second = state.decide("PUT", "/send/2")
    assert first is not None and first[0].name == "first"
    assert second is not None and second[0].name == "second" and second[1] == 2
    assert state.decide("PUT", "/send/3") is None


def test_install_restarts_the_counts() -> None:
    state = FaultState()
    state.install([rule()])
    assert state.decide("PUT", "/send/1") is not None
    assert state.decide("PUT", "/send/2") is None
    state.install([rule()])
    assert state.decide("PUT", "/send/3") is not None


def test_error_body_and_retry_after_header() -> None:
    r = rule(retry_after_ms=1500)
    assert r.error_body() == {"errcode": "M_LIMIT_EXCEEDED", "error": "matrix-qa fault 'r'", "retry_after_ms": 1500}
    assert r.headers() == {"Retry-After": "2"}
    assert rule(status=403).error_body()["errcode"] == "M_FORBIDDEN"
    assert rule(status=502).error_body()["errcode"] == "M_UNKNOWN"
    assert rule(status=403, errcode="M_CUSTOM", error="no").error_body() == {"errcode": "M_CUSTOM", "error": "no"}
    assert rule(status=403).headers() == {}


def test_describe_names_window_and_action() -> None:
    assert rule(nth=2, count=2, retry_after_ms=300).describe() == \
        "any /send/ #2-#3: 429 M_LIMIT_EXCEEDED retry_after_ms=300"
    assert FaultRule(name="s", method="GET", path="/sync", stall_ms=100, count="all").describe() == \
        "GET /sync #1+: stalled 100 ms, then dropped"
    assert FaultRule(name="d", path="/x", drop="after").describe() == "any /x #1: connection dropped after forwarding"
    assert FaultRule(name="d", path="/x", delay_ms=5).action == "delay"


@pytest.mark.parametrize(("fields", "message"), [
    ({"status": None}, "exactly one of delay_ms, status, drop, stall_ms, hold_ms, rewrite_to, hold_to_device "
                       "(found: none)"),
    ({"drop": "before"}, "exactly one of delay_ms, status, drop, stall_ms, hold_ms, rewrite_to, hold_to_device "
                         "(found: status, drop)"),
    ({"status": None, "delay_ms": 5, "retry_after_ms": 5}, "belong to a `status` rule"),
    ({"status": 418}, "status 418 has no default Matrix errcode"),
    ({"count": 0}, "count must be at least 1"),
    ({"path": "("}, "invalid regex"),
    ({"stall_ms": 10**9, "status": None}, "less than or equal to 120000"),
    ({"name": "Bad Name"}, "String should match pattern"),
    ({"nth": 0}, "greater than or equal to 1"),
])
def test_bad_rules_are_refused_with_the_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        rule(**fields)
    assert message in str(err.value)


def test_duplicate_names_are_found() -> None:
    problems = check_unique([rule(), rule(name="b"), rule()])
    assert problems == [(2, "duplicate fault rule name 'r' (first used by faults[0])")]
    assert check_unique([rule(), rule(name="b")]) == []


def test_retry_gaps_measure_from_the_faulty_answer_to_the_next_matching_request() -> None:
    r = rule(method="PUT")
    hits = [{"endedAt": 100.0}, {"endedAt": 500.0}]
    requests = [{"method": "PUT", "path": "/send/1", "startedAt": 90.0},
                {"method": "GET", "path": "/send/1", "startedAt": 150.0},  # another method: not a retry
                {"method": "PUT", "path": "/send/1", "startedAt": 420.0},
                {"method": "PUT", "path": "/send/1", "startedAt": 800.0}]
    assert retry_gaps(hits, requests, r) == [320.0, 300.0]
    assert retry_gaps([{"endedAt": 900.0}], requests, r) == [None]
    assert retry_gaps(hits, requests, None) == [50.0, 300.0]
    assert retry_gaps([{"endedAt": None}], requests, r) == [None]


@pytest.mark.parametrize(("status", "errcode"), [(400, "M_BAD_JSON"), (401, "M_UNKNOWN_TOKEN"),
                                                 (403, "M_FORBIDDEN"), (404, "M_NOT_FOUND"),
                                                 (429, "M_LIMIT_EXCEEDED"), (500, "M_UNKNOWN")])
def test_each_status_answers_with_the_matrix_errcode_clients_expect(status: int, errcode: str) -> None:
    assert rule(status=status).error_body()["errcode"] == errcode


def test_each_action_is_named_and_described() -> None:
    assert rule().action == "status"
    assert FaultRule(name="d", path="/x", drop="before").action == "drop-before"
    assert FaultRule(name="d", path="/x", drop="after").action == "drop-after"
    assert FaultRule(name="s", path="/x", stall_ms=1).action == "stall"
    assert FaultRule(name="d", path="/x", drop="before").describe() == \
        "any /x #1: connection dropped before forwarding"
    assert FaultRule(name="d", path="/x", delay_ms=1, nth=3).describe() == "any /x #3: delayed 1 ms"
    assert rule(status=403).describe() == "any /send/ #1: 403 M_FORBIDDEN"


def test_the_bounds_of_every_field_are_where_the_schema_says() -> None:
    # Smallest and largest values allowed; each of these would be refused by an off-by-one bound.
    FaultRule(name="a", path="/x", delay_ms=1)
    FaultRule(name="a", path="/x", stall_ms=1)
    rule(status=400)
    rule(status=599)
    rule(retry_after_ms=0)
    for method in ("GET", "PUT", "POST", "DELETE", "OPTIONS"):
        assert rule(method=method).method == method
    with pytest.raises(ValidationError):
        rule(status=600)


@pytest.mark.parametrize("extra", [{"errcode": "M_X"}, {"error": "text"}, {"retry_after_ms": 5}])
def test_each_status_field_alone_is_refused_on_a_rule_without_status(extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as err:
        FaultRule.model_validate({"name": "r", "path": "/x", "delay_ms": 5, **extra})
    assert "Value error, errcode, error and retry_after_ms belong to a `status` rule" in str(err.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"count": 0}, 'Value error, count must be at least 1 (or "all")'),
    ({"status": 418}, "Value error, status 418 has no default Matrix errcode; give `errcode`"),
    ({"status": None},
     "Value error, a fault rule needs exactly one of delay_ms, status, drop, stall_ms, hold_ms, rewrite_to, "
     "hold_to_device (found: none)"),
])
def test_refusals_read_exactly_as_written(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        rule(**fields)
    assert message in str(err.value)


def test_retry_after_rounds_up_to_whole_seconds_and_rules_are_immutable() -> None:
    assert rule(retry_after_ms=1001).headers() == {"Retry-After": "2"}
    assert rule(retry_after_ms=1000).headers() == {"Retry-After": "1"}
    with pytest.raises(ValidationError):
        rule().nth = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        rule(unknown=1)


def test_a_fresh_state_forwards_everything() -> None:
    assert FaultState().decide("GET", "/sync") is None
    assert FaultState().seen == {} and FaultState().rules == []


def test_a_rule_that_does_not_match_lets_the_next_one_act() -> None:
    state = FaultState()
    state.install([rule(name="sync-only", path="/sync"), rule(name="sends")])
    hit = state.decide("PUT", "/send/1")
    assert hit is not None and hit[0].name == "sends"


@pytest.mark.parametrize("fields", [{"delay_ms": 0, "status": None}, {"retry_after_ms": -1}, {"errcode": "bad"},
                                    {"delay_ms": 120_001, "status": None}])
def test_out_of_range_values_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        rule(**fields)


def test_retry_gaps_skip_open_hits_count_a_retry_at_the_same_instant_and_keep_a_tenth_of_a_ms() -> None:
    r = rule(method="PUT")
    hits = [{"endedAt": None}, {"endedAt": 100.0}, {"endedAt": 200.0}]
    requests = [{"method": "PUT", "path": "/send/1", "startedAt": 100.0},
                {"method": "PUT", "path": "/send/2", "startedAt": 200.26}]
    assert retry_gaps(hits, requests, r) == [None, 0.0, 0.3]


def test_a_hold_is_its_own_action() -> None:
    rule = FaultRule.model_validate({"name": "silent", "path": "/sync$", "hold_ms": 20_000})
    assert rule.action == "hold"
    assert rule.describe() == ("any /sync$ #1: held open with no answer (up to 20000 ms, until the client gives up "
                               "or a release)")
    with pytest.raises(ValueError, match="exactly one of delay_ms, status, drop, stall_ms, hold_ms, rewrite_to"):
        FaultRule.model_validate({"name": "x", "path": "/sync", "hold_ms": 10, "stall_ms": 10})
    with pytest.raises(ValueError, match="less than or equal to 120000"):
        FaultRule.model_validate({"name": "x", "path": "/sync", "hold_ms": 120_001})


def test_a_rewrite_forwards_to_another_path() -> None:
    rule = FaultRule.model_validate({"name": "legacy", "method": "GET", "path": "^/_matrix/media/v3/download/",
                                     "rewrite_to": "/_matrix/client/v1/media/download/"})
    assert rule.action == "rewrite"
    assert rule.rewritten("/_matrix/media/v3/download/hs/abc") == "/_matrix/client/v1/media/download/hs/abc"
    assert rule.rewritten("/elsewhere") == "/elsewhere"
    assert rule.describe() == "GET ^/_matrix/media/v3/download/ #1: forwarded as /_matrix/client/v1/media/download/…"
    backslash = FaultRule.model_validate({"name": "b", "path": "x", "rewrite_to": "/a\\1"})
    assert backslash.rewritten("/x/y") == "//a\\1/y"  # literal: no group references
    with pytest.raises(ValueError, match="should match pattern"):
        FaultRule.model_validate({"name": "r", "path": "x", "rewrite_to": "relative"})


def test_to_device_events_are_taken_out_and_given_back_in_order() -> None:
    from qa.harness.fault_rules import give_to_device, take_to_device

    key = {"type": "m.room.encrypted", "content": {"n": 1}}
    other = {"type": "m.key.verification.start"}
    body = {"next_batch": "s2", "to_device": {"events": [other, key, "junk"]}, "rooms": {}}
    kept, taken = take_to_device(body, "m.room.encrypted")
    assert taken == [key] and kept["to_device"]["events"] == [other, "junk"] and kept["next_batch"] == "s2"
    assert body["to_device"]["events"] == [other, key, "junk"]  # the answer read is not changed in place
    assert take_to_device(kept, "m.room.encrypted") == (kept, [])
    assert take_to_device({"next_batch": "s"}, "m.room.encrypted") == ({"next_batch": "s"}, [])
    assert take_to_device({"to_device": {"events": "x"}}, "t") == ({"to_device": {"events": "x"}}, [])
    assert take_to_device(["not", "a", "dict"], "t") == (["not", "a", "dict"], [])
    assert give_to_device(kept, taken)["to_device"]["events"] == [other, "junk", key]
    assert give_to_device({"next_batch": "s3"}, [key]) == {"next_batch": "s3", "to_device": {"events": [key]}}
    assert give_to_device({"to_device": {"events": "x", "k": 1}}, [key]) == {"to_device": {"events": [key], "k": 1}}
    assert give_to_device({"a": 1}, []) == {"a": 1} and give_to_device("x", [key]) == "x"
    rule = FaultRule.model_validate({"name": "late", "path": "/sync$", "hold_to_device": "m.room.encrypted"})
    assert rule.action == "hold-to-device"
    assert rule.describe() == "any /sync$ #1: to-device m.room.encrypted kept back until released"


def test_the_new_actions_bounds_and_names() -> None:
    assert FaultRule.model_validate({"name": "h", "path": "/sync", "hold_ms": 1}).hold_ms == 1
    with pytest.raises(ValueError, match="greater than 0"):
        FaultRule.model_validate({"name": "h", "path": "/sync", "hold_ms": 0})
    with pytest.raises(ValueError, match="should match pattern"):
        FaultRule.model_validate({"name": "t", "path": "/sync", "hold_to_device": "M.Room Key"})
