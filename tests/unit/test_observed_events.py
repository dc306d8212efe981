"""The run's observed events are kept sanitized, one JSON text per scenario, between a scenario's end and the record
(qa.report.observed_events): the file says what it said, and the harness holds a fraction of the memory (issue 29)."""

from __future__ import annotations

import tracemalloc
from typing import Any

from qa.report.observed_events import ObservedEvents
from qa.report.writer import sanitize_events


def _events(room: str, n: int) -> list[dict[str, Any]]:
    """Events shaped as a test user's client hands them over (nio's source dicts)."""
    return [{"type": "m.room.message", "room_id": room, "event_id": f"$e{k}-{room}", "sender": "@alice:localhost",
             "origin_server_ts": 1700000000000 + k,
             "content": {"msgtype": "m.text", "body": f"hello number {k} " * 8, "m.mentions": {"user_ids": ["@b:l"]},
                         "m.relates_to": {"m.in_reply_to": {"event_id": f"$e{k - 1}"}}},
             "unsigned": {"age": 12, "transaction_id": f"t{k}", "m.relations": {"m.thread": {"count": k}}}}
            for k in range(n)]


def _old_way(finished: list[tuple[str, list[dict[str, Any]]]], order: dict[str, int],
             include_bodies: bool) -> list[dict[str, Any]]:
    """What the record wrote before: every event kept whole, sorted by scenario at the end, then sanitized."""
    kept = [{**e, "scenario": sid, "observedBy": "alice"} for sid, events in finished for e in events]
    kept.sort(key=lambda e: order.get(str(e.get("scenario")), len(order)))
    return sanitize_events(kept, include_bodies=include_bodies)


def test_the_file_says_what_it_said_scenarios_in_plan_order_however_they_finished() -> None:
    order = {"first": 0, "second": 1}
    finished = [("second", _events("!b", 3)), ("unplanned", _events("!c", 1)), ("first", _events("!a", 2))]
    for include_bodies in (False, True):
        store = ObservedEvents(include_bodies)
        for sid, events in finished:
            store.add(sid, "alice", events)
        assert store.events(order) == _old_way(finished, order, include_bodies)
        assert len(store) == 6
    assert [e["scenario"] for e in store.events(order)] == ["first"] * 2 + ["second"] * 3 + ["unplanned"]


def test_the_callers_events_are_left_as_they_were() -> None:
    events = _events("!a", 2)
    before = repr(events)
    ObservedEvents().add("s", "alice", events)
    assert repr(events) == before


def _held_bytes(keep: Any) -> int:
    tracemalloc.start()
    try:
        held = keep()
        size, _ = tracemalloc.get_traced_memory()
        del held
    finally:
        tracemalloc.stop()
    return size


def test_a_scenarios_events_cost_a_fraction_of_what_keeping_them_whole_did() -> None:
    # Each scenario's events are made as its test user's client made them, and let go when it ends (the client
    # closes): only what the run keeps of them stays.
    def whole() -> list[dict[str, Any]]:
        return [{**e, "scenario": f"scenario-{k}", "observedBy": "alice"} for k in range(50)
                for e in _events(f"!r{k}", 20)]

    def store() -> ObservedEvents:
        kept = ObservedEvents()
        for k in range(50):
            kept.add(f"scenario-{k}", "alice", _events(f"!r{k}", 20))
        return kept

    held_whole, held_store = _held_bytes(whole), _held_bytes(store)
    # Measured: ~0.1 of it (sanitized, one text a scenario).
    assert held_store < held_whole * 0.3, f"{held_store} bytes held for 1000 events, against {held_whole} kept whole"
