"""Waits see every item as it comes, with bounded memory and no re-scan (qa.waiting), and the trace is read in
bounded chunks with an overlong line dropped (qa.harness.bot_process.trace_lines)."""

from __future__ import annotations

import asyncio

import pytest

from qa.harness.bot_process import _SKIPPING, TRACE_LINE_MAX, trace_lines
from qa.patterns import PatternTimeout, user_pattern
from qa.waiting import Stream, WaitTimeout


async def test_a_ready_line_after_the_kept_window_is_still_seen() -> None:
    stream: Stream[str] = Stream(str, keep=100)
    waiter = asyncio.ensure_future(stream.wait_for(lambda line: line == "ready", 10, "ready"))
    await asyncio.sleep(0)  # the waiter registers before the flood
    for i in range(10_000):
        await stream.append(f"noise {i}")
    await stream.append("ready")
    assert await waiter == "ready"
    assert len(stream.items) < 200 and stream.count == 10_001 and stream.dropped == stream.count - len(stream.items)


async def test_a_wait_that_starts_late_scans_what_is_held_from_its_absolute_start() -> None:
    stream: Stream[int] = Stream(keep=10)
    for i in range(100):
        await stream.append(i)
    assert await stream.wait_for(lambda i: i >= 95, 1, "late", start=stream.count - 5) == 95
    assert stream.find(lambda i: i == 3) is None, "not held any more"
    with pytest.raises(WaitTimeout) as caught:
        await stream.wait_for(lambda i: i > 1000, 0.05, "never", start=95)
    assert caught.value.seen == ["95", "96", "97", "98", "99"]


async def test_each_item_is_judged_once_not_on_every_wake() -> None:
    stream: Stream[int] = Stream(pure=True)
    calls: list[int] = []

    def predicate(item: int) -> bool:
        calls.append(item)
        return item == 499

    waiter = asyncio.ensure_future(stream.wait_for(predicate, 10, "499"))
    await asyncio.sleep(0)
    for i in range(500):
        await stream.append(i)
        await asyncio.sleep(0)  # the waiter wakes after every item
    assert await waiter == 499
    assert calls == list(range(500)), "linear: no re-scan of what was seen"


async def test_a_pattern_that_times_out_fails_the_wait_not_the_appender() -> None:
    stream: Stream[str] = Stream(str, pure=True)
    pattern = user_pattern("(a|aa)+$")
    waiter = asyncio.ensure_future(stream.wait_for(lambda line: pattern.search(line) is not None, 30, "x"))
    await asyncio.sleep(0)
    await stream.append("a" * 60 + "b")  # the appender (the log pump) goes on
    await stream.append("next")
    with pytest.raises(PatternTimeout):
        await waiter


async def test_a_closed_stream_ends_the_wait_and_a_found_item_returns_at_once() -> None:
    stream: Stream[int] = Stream()
    await stream.append(1)
    assert await stream.wait_for(lambda i: i == 1, 0.01, "one") == 1
    waiter = asyncio.ensure_future(stream.wait_for(lambda i: i == 2, 10, "two"))
    await asyncio.sleep(0)
    await stream.close("exited")
    with pytest.raises(WaitTimeout, match=r"two \(stream ended: exited\)"):
        await waiter


def test_trace_lines_keep_a_partial_line_and_drop_an_overlong_one() -> None:
    assert trace_lines(b"", b'{"a":1}\n{"b"') == ([b'{"a":1}'], b'{"b"')
    assert trace_lines(b'{"b"', b':2}\n') == ([b'{"b":2}'], b"")
    lines, rest = trace_lines(b"", b'{"a":1}\n' + b"x" * (TRACE_LINE_MAX + 1))
    assert lines == [b'{"a":1}'] and rest == _SKIPPING
    assert trace_lines(rest, b"y" * 10) == ([], _SKIPPING), "still inside the overlong line"
    assert trace_lines(_SKIPPING, b'yyy\n{"c":3}\n{"d"') == ([b'{"c":3}'], b'{"d"')
    assert trace_lines(b"", b"x" * TRACE_LINE_MAX) == ([], b"x" * TRACE_LINE_MAX), "at the bound it is kept"


async def test_a_stream_of_impure_predicates_rejudges_every_item_on_each_wake() -> None:
    """Evidence streams: a predicate may start to hold for an item seen before (an id learned since)."""
    stream: Stream[str] = Stream(str)
    wanted: set[str] = set()
    waiter = asyncio.ensure_future(stream.wait_for(lambda item: item in wanted, 10, "the reply"))
    await stream.append("reply")
    await asyncio.sleep(0)
    wanted.add("reply")
    await stream.append("other")
    assert await waiter == "reply"


async def test_a_chunk_is_judged_item_by_item_until_each_wait_has_its_first_match() -> None:
    """A chunk of lines is offered to each wait at once: each finds the first item it matches, judges nothing
    after it, and a predicate that fails ends its own wait only, with its error."""
    stream: Stream[int] = Stream(keep=1000)
    judged: list[int] = []

    def even_over_2(i: int) -> bool:
        judged.append(i)
        return i > 2 and i % 2 == 0

    def fails_at_5(i: int) -> bool:
        if i == 5:
            raise ValueError("five")
        return False

    first = asyncio.ensure_future(stream.wait_for(even_over_2, 5, "even"))
    second = asyncio.ensure_future(stream.wait_for(lambda i: i == 7, 5, "seven"))
    third = asyncio.ensure_future(stream.wait_for(fails_at_5, 5, "never"))
    await asyncio.sleep(0)
    await stream.extend([1, 2, 3, 4, 5, 6, 7, 8])
    assert await first == 4 and judged == [1, 2, 3, 4]
    assert await second == 7
    with pytest.raises(ValueError, match="five"):
        await third


async def test_a_wait_that_says_its_predicate_is_pure_judges_each_item_once_on_any_stream() -> None:
    """The bot's trace stream is not pure (steps count records, or learn ids meanwhile), but a wait whose
    predicate reads only the record says so (`pure=True`), and is linear: what is held once, then each record as
    it comes; the other waits on the same stream still re-judge everything."""
    stream: Stream[int] = Stream()
    for i in range(10):
        await stream.append(i)
    calls: list[int] = []

    def predicate(item: int) -> bool:
        calls.append(item)
        return item == 299

    wanted: set[int] = set()
    waiter = asyncio.ensure_future(stream.wait_for(predicate, 10, "299", start=5, pure=True))
    impure = asyncio.ensure_future(stream.wait_for(lambda i: i in wanted, 10, "learned"))
    await asyncio.sleep(0)
    for i in range(10, 300):
        await stream.append(i)
        await asyncio.sleep(0)  # every wait wakes after every item
    assert await waiter == 299
    assert calls == list(range(5, 300)), "from its start, each once: no re-scan"
    wanted.add(3)
    await stream.append(300)
    assert await impure == 3, "an impure wait on the same stream still re-judges what it saw"
    assert await stream.wait_for(lambda i: i == 7, 1, "held", start=5, pure=True) == 7
    assert not stream._watches, "a finished wait leaves no watch behind"
    closing = asyncio.ensure_future(stream.wait_for(lambda i: i < 0, 10, "never", pure=True))
    await asyncio.sleep(0)
    await stream.close("exited")
    with pytest.raises(WaitTimeout, match=r"never \(stream ended: exited\)"):
        await closing
