"""After the last step, a bot that says every turn of its running process ended is idle: a turn of a process
killed mid-turn (it never ends) no longer makes the scenario wait out the whole settle window."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from qa.scenario.settling import bot_says_it_is_idle, current_process
from qa.waiting import WaitTimeout


class Trace:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.waited = 0

    async def wait_for(self, check: Any, timeout: float, what: str) -> None:
        self.waited += 1
        raise WaitTimeout(what, timeout, [])


def turn(kind: str, attempt: str) -> dict[str, Any]:
    return {"type": f"turn.{kind}", "attempt": attempt}


KILLED = [{"type": "start", "pid": 1}, turn("start", "a1"),  # killed before its turn ended
          {"type": "start", "pid": 2}, turn("start", "b1"), turn("end", "b1")]


def idle(items: list[dict[str, Any]]) -> tuple[bool, int]:
    trace = Trace(items)
    ctx = SimpleNamespace(bot=SimpleNamespace(has_trace=True, trace=trace))
    return asyncio.run(bot_says_it_is_idle(ctx)), trace.waited  # type: ignore[arg-type]


def test_records_from_the_last_start_on_are_the_running_process() -> None:
    assert current_process(KILLED) == KILLED[2:]
    assert current_process(KILLED[1:2]) == KILLED[1:2]  # no start record: every record
    assert current_process([]) == []


def test_a_turn_of_a_killed_process_does_not_keep_the_bot_busy() -> None:
    assert idle(KILLED) == (True, 0)


def test_an_open_turn_of_the_running_process_still_does() -> None:
    assert idle([*KILLED, turn("start", "b2")]) == (False, 1)
    assert idle(KILLED[:2]) == (False, 1)  # one process, its turn not ended


def test_a_running_process_with_no_turn_is_not_taken_as_idle() -> None:
    assert idle([*KILLED[:2], {"type": "start", "pid": 2}]) == (False, 1)


def test_without_start_records_every_turn_counts() -> None:
    assert idle([turn("start", "a1"), turn("start", "b1"), turn("end", "b1")]) == (False, 1)
    assert idle([turn("start", "a1"), turn("end", "a1")]) == (True, 0)
