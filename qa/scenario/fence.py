"""The final checks once more, on the room as the bot left it.

The first look (qa.scenario.settling) trusts what a bot's trace says it sent; a bot can send more than it traces,
or after its turn.end. Once its process has exited (the runner stops it after the last step, as it always did)
it can send nothing more, so the observer sends a fence, an event of its own, into each scenario room it is in,
and waits until its own client has received every fence. A room's timeline is one ordered stream (Synapse: the
events stream, whose position a sync reaches only once every event before it is persisted; a room's events go
through one writer), so every bot event the homeserver persisted before the fence reaches the client no later
than the fence does. The final checks then run again on that whole view.

Not covered: a request the homeserver had received but not yet persisted when the fence was (a bot SIGKILLed with
its send in flight): the homeserver persists it after the fence, unseen. A fence that does not arrive in time, a
sync that cut a fenced room's timeline short, or a late bot event the observer could not decrypt leaves the final
checks NOT CHECKED with the reason, never passed.

Why a room event, although it is the dearest part (a send, its persistence and a /sync per member: about 5 % of
the embedded Synapse's request work in a fast run, issue 29): the cheaper stand-ins do not give the same
guarantee. A to-device message to itself, or a `/sync?timeout=0`, answers with the events position Synapse has
at that moment, which is the highest id below every id still being persisted (MultiWriterIdGenerator's
persisted-upto position); rooms are persisted side by side (one queue per room), so a bot event already stored
can sit above that position while another room's earlier id is in flight, and such a sync misses it. A fence's
own id comes after the bot's last event, so the sync that brings the fence has passed it. One fence per room
rather than one for all: a single-writer Synapse would need only one, but a homeserver with event persisters
sharded by room keeps one position per writer.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from qa.evidence.fence import (
    FENCE_TYPE,
    fence_shortfall,
    late_bot_events,
    late_verdict,
    not_checked,
    rooms_joined,
    unreadable,
)
from qa.kernel.errors import InfraError
from qa.scenario.context import ScenarioContext, StepFailed
from qa.waiting import WaitTimeout

# Never spent when the homeserver is well: the fence needs one send and one sync (tens of ms).
FENCE_TIMEOUT_S = 10.0


class LateFailure(StepFailed):
    """A final check that held at the first look and fails on the room as the bot left it."""

    def __init__(self, details: str, seen: list[str]) -> None:
        super().__init__("what the steps checked still holds in the room as the bot left it", seen)
        self.details = details


async def judge_after_exit(ctx: ScenarioContext, mark: int) -> str | None:
    """The bot has been stopped. Fence every scenario room the observer is in, wait (at most FENCE_TIMEOUT_S) for
    the fences, and run the final checks again. Raises LateFailure when one fails now, naming the bot's events
    that came after the first look (from `mark` in the observer's stream); returns what kept the view from being
    whole (the final checks NOT CHECKED), or None."""
    if ctx.bot.proc is not None and ctx.bot.proc.returncode is None:
        return "the bot had not exited, so no fence could close its output"
    observer = ctx.observer()
    rooms = rooms_joined(observer.events.items, observer.user_id, ctx.rooms.values(), observer.client.rooms,
                         observer.left_rooms)
    missing = await _bounded_fences(observer, rooms) if rooms else ["the observer is in none of the scenario's rooms"]
    # A scenario room the observer is no longer in gets no fence, and its stream stopped at the leave: what the
    # bot sent there later is unseen, so a final check of that room is not whole (never a pass on such a view).
    was_in = observer.left_rooms | {str(e.get("room_id")) for e in observer.events.items}
    missing += [f"the observer is no longer in {room}: the bot's events there after it left are not seen"
                for room in dict.fromkeys(ctx.rooms.values()) if rooms and room not in rooms and room in was_in]
    late = late_bot_events(observer.events.items, mark, ctx.bot_ids)
    problems = [problem for check in ctx.final_checks if (problem := check())]
    if problems:  # a wrong room is wrong whatever else may still be on its way
        raise LateFailure(*late_verdict(problems, late))
    # What the whole view still cannot tell (an untraced message that may answer an ignored one) is said too.
    missing += [note for check in ctx.after_exit_notes if (note := check(mark))]
    return not_checked(missing, unreadable(late))


async def _bounded_fences(observer: Any, rooms: list[str]) -> list[str]:
    """_fences within twice FENCE_TIMEOUT_S, the sends included (a test user's client retries a send that times out
    without end, and this runs outside the scenario's own timeout)."""
    bound = 2 * FENCE_TIMEOUT_S  # the sends' own share, then the wait's (which _fences bounds itself)
    try:
        async with asyncio.timeout(bound):
            return await _fences(observer, rooms)
    except TimeoutError:
        return [f"the fences were not sent and received within {bound:g} s"]


async def _fences(observer: Any, rooms: list[str]) -> list[str]:
    """Send one fence per room and wait for all of them; what is missing at the end (empty: the view is whole)."""
    start = observer.events.count
    nonce = secrets.token_hex(8)
    sent = await asyncio.gather(*(observer.send_unencrypted(room, FENCE_TYPE, {"nonce": nonce}) for room in rooms),
                                return_exceptions=True)
    refused = [f"no fence could be sent: {exc}" for exc in sent if isinstance(exc, InfraError)]
    for exc in sent:
        if isinstance(exc, BaseException) and not isinstance(exc, InfraError):
            raise exc  # a harness bug, not a refusal
    fences = {room: event_id for room, event_id in zip(rooms, sent, strict=True) if isinstance(event_id, str)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FENCE_TIMEOUT_S
    for room, event_id in fences.items():
        try:
            await observer.events.wait_for(lambda e, i=event_id: e.get("event_id") == i,
                                           max(0.0, deadline - loop.time()), f"the fence in {room}", start, pure=True)
        except WaitTimeout:
            break
    # Any cut since the first sync: the final checks read the whole stream, and one cut anywhere leaves a hole in it.
    return refused + fence_shortfall(fences, observer.events.items, observer.cut_later)
