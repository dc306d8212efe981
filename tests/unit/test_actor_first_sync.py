"""A test user's first sync after setup (qa.actors SETUP_SYNC_FILTER): the rooms come whole, and a timeline the
server cut short is refused by name instead of leaving setup events out of the stream unsaid."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.actors import FIRST_SYNC_FILTER, SETUP_SYNC_FILTER, Actor
from qa.kernel.errors import HomeserverError


def _response(limited: bool, batch: str) -> Any:
    event = SimpleNamespace(source={"type": "m.room.create", "event_id": "$create", "state_key": ""})
    room = SimpleNamespace(timeline=SimpleNamespace(events=[event], limited=limited))
    return SimpleNamespace(rooms=SimpleNamespace(join={"!r:test": room}), to_device_events=[], next_batch=batch)


async def _first_sync(tmp_path: Path, limited: bool, first_filter: dict[str, Any]) -> tuple[Actor, list[Any]]:
    actor = Actor("driver", "http://127.0.0.1:9", "@driver:test", "pw", tmp_path)
    filters: list[Any] = []
    later = asyncio.Event()

    async def sync(**kwargs: Any) -> Any:
        filters.append(kwargs.get("sync_filter"))
        if len(filters) > 1:
            await later.wait()  # the long-poll that follows: never answers here
        return _response(limited, f"s{len(filters)}")

    actor.client.sync = sync  # type: ignore[method-assign]
    return actor, filters


async def _close(actor: Actor) -> None:
    if actor._sync_task is not None:
        actor._sync_task.cancel()
        await asyncio.gather(actor._sync_task, return_exceptions=True)
    await actor.client.close()


def test_the_setup_filter_asks_for_whole_rooms_within_what_servers_allow() -> None:
    # Synapse caps a filter's timeline at filter_timeline_limit (default 100); asking more gets 100 anyway.
    assert SETUP_SYNC_FILTER["room"]["timeline"]["limit"] == 100
    assert SETUP_SYNC_FILTER["account_data"] == FIRST_SYNC_FILTER["account_data"]


async def test_a_whole_first_sync_is_taken_and_its_events_streamed(tmp_path: Path) -> None:
    actor, filters = await _first_sync(tmp_path, False, SETUP_SYNC_FILTER)
    try:
        await actor.start_sync(SETUP_SYNC_FILTER)
        assert filters[0] is SETUP_SYNC_FILTER
        assert [e["event_id"] for e in actor.events.items] == ["$create"]
    finally:
        await _close(actor)


async def test_a_cut_first_sync_of_the_setup_is_refused_naming_the_room(tmp_path: Path) -> None:
    actor, _ = await _first_sync(tmp_path, True, SETUP_SYNC_FILTER)
    try:
        with pytest.raises(HomeserverError, match=r"driver's first sync cut the timeline of !r:test"):
            await actor.start_sync(SETUP_SYNC_FILTER)
    finally:
        await _close(actor)


async def test_a_cut_first_sync_is_fine_where_whole_rooms_were_not_asked_for(tmp_path: Path) -> None:
    # A second device's first sync (the default filter) is not a setup sync: its cut timeline is expected.
    actor, _ = await _first_sync(tmp_path, True, FIRST_SYNC_FILTER)
    try:
        await actor.start_sync()
    finally:
        await _close(actor)
