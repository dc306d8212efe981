"""bench/latency_breakdown.py: each hop of a reply is the difference of the right two timestamps."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("latency_breakdown", REPO / "bench" / "latency_breakdown.py")
assert _spec is not None and _spec.loader is not None
lb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lb)


def _reply(attempt: str = "turn-1", approval: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                    list[dict[str, Any]], dict[str, float]]:
    # Distinct gaps (1, 2, 4, 8, ...) so a hop computed from the wrong pair of timestamps cannot pass.
    trace = [
        {"t": 0, "type": "start", "pid": 7},
        {"t": 1043, "type": "inbound", "eventId": "$trig"},
        {"t": 1043, "type": "turn.start", "attempt": attempt},
        {"t": 1047, "type": "lock.release", "attempt": attempt, "purpose": "inbound"},
        {"t": 1055, "type": "model.request.start", "attempt": attempt},
        {"t": 1571, "type": "model.request.end", "attempt": attempt},
        {"t": 1603, "type": "lock.release", "attempt": attempt, "purpose": "reply"},
        {"t": 1800, "type": "reply.sent", "attempt": attempt, "eventId": "$reply", "inReplyTo": "$trig"},
    ]
    if approval:
        trace.insert(5, {"t": 1100, "type": "approval.request", "attempt": attempt})
    http = [
        {"pid": 1, "m": "PUT", "u": "/send", "t0": 1000, "t1": 1010, "ev": "$trig"},
        {"pid": 7, "m": "GET", "u": "http://hs/_matrix/client/v3/sync", "t0": 900, "t1": 1030},
        {"pid": 7, "m": "POST", "u": "http://mock/v1/chat/completions", "t0": 1071, "t1": 1080, "httpx": True},
        {"pid": 7, "m": "PUT", "u": "/send", "t0": 1667, "t1": 1795, "ev": "$reply"},
    ]
    journal = [{"path": "/scope/x/v1/chat/completions", "startedAt": 1075, "finishedAt": 1575, "latencyMs": 450}]
    return trace, http, journal, {"$reply": 2051.0}


def test_every_hop_is_the_gap_between_its_two_timestamps() -> None:
    [row] = lb.breakdown(*_reply())
    assert row == {
        "driver send (Synapse PUT)": 10,
        "send done -> bot /sync returns": 20,
        "bot: sync parsed -> inbound traced": 13,
        "bot: inbound lock + append + release": 4,
        "bot: release -> model request": 8,
        "bot: model request (minus mock latency)": 516 - 450,
        "  of which SDK before the HTTP request": 16,
        "  of which mock provider handling": 500 - 450,
        "bot: reply lock + append + release": 32,
        "bot: release -> send starts": 64,
        "bot send (Synapse PUT)": 128,
        "send done -> observer sees reply": 256,
        "total (as the summary counts it)": 1051 - 450,
    }


def test_a_reply_after_an_approval_is_left_out() -> None:
    # Its window holds a person's reaction: not a plain message → answer.
    assert lb.breakdown(*_reply(approval=True)) == []


def test_a_reply_whose_answer_was_never_observed_is_left_out() -> None:
    trace, http, journal, _ = _reply()
    assert lb.breakdown(trace, http, journal, {}) == []


def test_the_summary_sums_each_side_of_a_reply_without_counting_the_parts_twice() -> None:
    [row] = lb.breakdown(*_reply())
    floor = [{"t0": 0, "t1": 40, "t2": 100}, {"t0": 0, "t1": 60, "t2": 200}, {"t0": 0, "t1": 50, "t2": 150}]
    lines = lb.summary([row], floor)
    # ours: 13 + 4 + 8 + 66 + 32 + 64 (the model's "of which" rows are inside its 66); Synapse: 10 + 20 + 128 + 256
    assert lines[1].split()[:3] == ["ours", "187.0", "187.0"]
    assert lines[2].split()[:3] == ["Synapse", "414.0", "414.0"]
    # the floor: one hop's median (150 ms: send 50 + wake 100) twice, against the reply's total of 601 ms
    assert "send 50.0 ms + /sync wakes 100.0 ms = one hop 150.0 ms p50" in lines[3]
    assert "a reply needs two: 300.0 ms" in lines[3]
    assert lines[4].startswith("ratio reply latency p50 / floor: 601.0 / 300.0 = 2.00")


def test_without_a_floor_the_summary_says_it_was_not_measured() -> None:
    [row] = lb.breakdown(*_reply())
    assert lb.summary([row], [])[-1].startswith("Synapse floor: not measured")
    assert "ratio" not in lb.table([row])


def test_the_bot_cpu_is_its_process_time_from_the_sync_answer_to_the_send() -> None:
    trace, http, journal, seen = _reply()
    # an earlier sync of the bot, and one after the inbound: neither is the sync that brought the message
    http += [{"pid": 7, "m": "GET", "u": "http://hs/_matrix/client/v3/sync", "t0": 800, "t1": 899, "c0": 1, "c1": 2},
             {"pid": 7, "m": "GET", "u": "http://hs/_matrix/client/v3/sync", "t0": 1700, "t1": 1900, "c0": 9,
              "c1": 99}]
    http[1].update(c0=40.0, c1=41.5)  # the sync that woke the bot
    http[3].update(c0=47.25, c1=48.0)  # the reply's send
    [row] = lb.breakdown(trace, http, journal, seen)
    assert row[lb.BOT_CPU] == 47.25 - 41.5
    assert any(line.split()[:7] == ["bot", "CPU,", "sync", "returned", "->", "send", "starts"]
               and line.split()[7:9] == ["5.75", "5.75"] for line in lb.summary([row], []))


def test_without_cpu_figures_there_is_no_cpu_row() -> None:
    [row] = lb.breakdown(*_reply())
    assert lb.BOT_CPU not in row
    assert not any("CPU" in line for line in lb.summary([row], []))
