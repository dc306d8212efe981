"""The room keys the bot takes in: traced (`e2ee.room_key`), so a scenario can act right after the bot has one —
and the test-only mutation `late-crypto-save`, a bot that writes its new Olm and Megolm sessions a batch late.

nio takes a room key in while it reads the /sync response (client.sync): it decrypts the to-device Olm message
(a pre-key message makes and saves a new Olm session), then adds the Megolm session and saves it in the crypto
store. The bot traces the key once the batch that brought it is done and its sync position saved past it: from
then on the server will not send it again (its next /sync, from that position, acknowledges it), so the key and
the Olm session it came over exist in the crypto store alone. matrix-e2ee-crypto-store-hard-kill kills the bot
at that record: what is not on disk then is lost. (Traced any earlier, a kill before the position is saved
gets the key delivered again after the restart, and proves nothing about the store.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nio import RoomKeyEvent

from qa.kernel.trace import Trace


def trace_room_keys(trace: Trace, olm: Any, events: list[Any]) -> None:
    """One `e2ee.room_key` record for each room key of a batch's (decrypted) to-device events that the Olm
    machine took in: nio hands back the event even when it refused the key (a session id that does not match the
    key, an algorithm it does not know), so the record needs the session in its inbound group store."""
    for event in events:
        if isinstance(event, RoomKeyEvent) and olm is not None \
                and olm.inbound_group_store.get(event.room_id, event.sender_key, event.session_id) is not None:
            trace.emit("e2ee.room_key", roomId=event.room_id, sender=event.sender, sessionId=event.session_id,
                       algorithm=event.algorithm)


class LateCryptoSaves:
    """The test-only bug late-crypto-save: the Olm machine's writes of new Olm sessions and Megolm (inbound group)
    sessions are held back and done at the end of the NEXT batch, as by a bot that writes its crypto store
    lazily. Nothing is lost on a clean stop or while the bot keeps syncing; a SIGKILL right after a key came
    loses the key and its Olm session. A batch late, not a time: a reply round trip (the old check's kill) brings
    batches enough to save them, so only a kill gated on the key itself catches it."""

    def __init__(self, olm: Any) -> None:
        self._olm = olm
        self._this_batch: list[Callable[[], None]] = []
        self._last_batch: list[Callable[[], None]] = []
        save_session, save_group = olm.save_session, olm.save_inbound_group_session
        # Instance attributes shadow the methods: nio calls self.save_session / self.save_inbound_group_session.
        olm.save_session = lambda key, session: self._this_batch.append(lambda: save_session(key, session))
        olm.save_inbound_group_session = lambda session: self._this_batch.append(lambda: save_group(session))

    def batch_done(self) -> None:
        """The end of a batch: the writes held since the batch before are done now; this batch's wait."""
        due, self._last_batch, self._this_batch = self._last_batch, self._this_batch, []
        for save in due:
            save()

    @property
    def held(self) -> int:
        return len(self._this_batch) + len(self._last_batch)
