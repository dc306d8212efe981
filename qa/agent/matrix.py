"""The bot's Matrix edge: a matrix-nio client, a sync loop that keeps its position, and its E2EE upkeep.

The loop is written out (rather than nio's sync_forever) because the bot must persist its sync token only
after it has handed the batch's events on, and must say "ready" once its rooms are joined. What an event
becomes is qa.agent.routing's job; what the bot sends goes through qa.agent.sender.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from nio import MegolmEvent, RoomKeyEvent, SyncError, SyncResponse

from qa.agent.approval_flow import ApprovalFlow
from qa.agent.boot import BootMarks
from qa.agent.config import AgentConfig
from qa.agent.crypto_store import REQUEST_TIMEOUT_S, CryptoIdentity, HandedSession
from qa.agent.membership import Membership, backlog_cutoff
from qa.agent.policy import UNDECRYPTABLE
from qa.agent.room_keys import trace_room_keys
from qa.agent.routing import EventRouter
from qa.agent.sender import MAX_RETRY_AFTER_S, RETRY_DELAYS_S, Sender
from qa.agent.session import SessionManager
from qa.agent.verification import BotE2EE
from qa.kernel.clock import mono_ms
from qa.kernel.e2ee import event_view, maintain_keys
from qa.kernel.errors import InfraError
from qa.kernel.trace import Trace

log = logging.getLogger("qa.agent.matrix")

SYNC_TIMEOUT_MS = 30_000  # the default; the config's syncTimeoutMs
# A /sync that has said nothing this long past its own timeout is stalled (a proxy or load balancer holding it
# open): the bot stops waiting and syncs again from the same position. Half the timeout, within these bounds.
STALL_GRACE_BOUNDS_S = (2.0, 15.0)
# How long a failed batch waits for a key upload in flight to come back (join_beside_key_upload): one request's
# own timeout.
UPLOAD_SETTLE_S = REQUEST_TIMEOUT_S
# Catch-up after downtime comes in one batch as long as fewer events than this arrived meanwhile.
# No push rules: the bot never reads them, and nio validates and parses all ~70 of the server's in a start's
# first sync, tens of ms of CPU between the bot's start and its ready (issue 29). m.direct still comes.
NO_PUSH_RULES = {"not_types": ["m.push_rules"]}
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}, "account_data": NO_PUSH_RULES}
# A bot's very first sync (no position kept) takes all it sees for history, so it asks for little: a few
# timeline events and only the members they need (the members of an encrypted room nio fetches itself before
# it encrypts). Everything later, a restart's catch-up included, uses SYNC_FILTER.
FIRST_SYNC_FILTER = {"room": {"timeline": {"limit": 5, "lazy_load_members": True},
                              "state": {"lazy_load_members": True}},
                     "account_data": NO_PUSH_RULES}


class MatrixBot:
    """Keeps the bot in sync: login and device, the sync position, late decryption, "ready"; hands events on."""

    def __init__(self, config: AgentConfig, trace: Trace, password: str, session: HandedSession | None = None
                 ) -> None:
        self._config = config
        self._trace = trace
        self._password = password
        state = Path(config.state_dir)
        self._token_path = state / "sync-token.json"
        # The crypto store and a stable device id are what let an encrypted bot decrypt after a restart.
        self.identity = CryptoIdentity(config, trace, password, session)
        self.client = self.identity.new_client(self.identity.device_id())
        self.e2ee = BotE2EE(config, trace)
        # Encrypted events we could not decrypt yet: event id -> (event, room id, give-up time on mono clock)
        self._undecrypted: dict[str, tuple[MegolmEvent, str, float]] = {}
        # Megolm sessions of messages dropped as undecryptable: a key for one that comes later is traced
        # (decrypt.key-after-drop), so a drop tells a key that came too late from one that never came.
        self._dropped_sessions: set[str] = set()
        self._ready = False
        self.boot = BootMarks()  # the start's marks up to `ready` (qa.agent.boot); __main__ hands in its own
        # Rooms the bot joined from an invite: known to be its own before the next sync shows them.
        self._joined: set[str] = set()
        self._pinned: dict[tuple[str, str], str] = {}  # only for the first-megolm-session-only mutation
        self.membership = Membership(state, config.user_id, trace, forget=config.forget_state_on_start)
        self.membership.room_members = lambda room_id: _room_members(self.client, room_id)  # the client of now
        self.sender = Sender(lambda: self._config, lambda: self.client, self.e2ee, trace)
        self.router = EventRouter(lambda: self._config, trace, self.e2ee, self.membership, self.sender.sent)

    @property
    def sessions(self) -> SessionManager | None:
        return self.router.sessions

    @sessions.setter
    def sessions(self, sessions: SessionManager | None) -> None:
        self.router.sessions = sessions

    @property
    def approvals(self) -> ApprovalFlow | None:
        return self.router.approvals

    @approvals.setter
    def approvals(self, approvals: ApprovalFlow | None) -> None:
        self.router.approvals = approvals

    @property
    def config(self) -> AgentConfig:
        return self._config

    def reconfigure(self, config: AgentConfig) -> None:
        """A reloaded config (qa.agent.reload): the next event is decided by it."""
        self._config = config

    async def login(self) -> None:
        self.client = await self.identity.login(self.client)
        self.e2ee.install(self.client)

    def _load_token(self) -> str | None:
        if self._config.forget_state_on_start or not self._token_path.exists():
            return None
        try:
            return json.loads(self._token_path.read_text())["next_batch"]
        except (OSError, ValueError, KeyError):
            return None

    def _save_token(self, token: str) -> None:
        tmp = self._token_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"next_batch": token}))
        tmp.replace(self._token_path)  # atomic, so a SIGKILL never leaves half a token

    async def run(self) -> None:
        token = self._load_token()
        forget = self._config.forget_state_on_start
        # A bot that never synced treats what is already in its rooms as history. The test-only mutation
        # `forgetStateOnStart` behaves like a bot that keeps no state at all: everything looks new.
        history_first = token is None and not forget
        first = True
        failures = 0
        if self.sessions is not None and not forget and not self._config.mutated("no-resume"):
            resumed = self.sessions.resume_interrupted()
            if resumed:
                self._trace.emit("resume", interruptedTurns=resumed)
        while True:
            resp = await self._sync_once(token, first,
                                         FIRST_SYNC_FILTER if token is None and history_first else SYNC_FILTER)
            self.boot.mark("sync")
            if isinstance(resp, SyncError) and await self._relogin_if_deleted(resp):
                first = True  # a new client knows no room yet: full state again (the position is kept)
                continue
            if isinstance(resp, SyncError):
                delay = _retry_delay(self._config, failures, resp.retry_after_ms)
                failures += 1
                self._trace.emit("error", where="sync", error=resp.message, retryInS=delay)
                if self._config.mutations.give_up_on_sync_error:
                    raise InfraError(f"sync failed: {resp.message} (mutation giveUpOnSyncError)")
                # The same `since` again: whatever arrived meanwhile comes in the next batch, nothing is skipped.
                token, first, history_first = _restarted(self._config, token, first, history_first)
                await asyncio.sleep(delay)
                continue
            if failures:
                self._trace.emit("sync.resumed", afterFailures=failures)
            failures = 0
            joined, sent = await join_beside_key_upload(self.client, self.membership, resp.rooms.invite, self._config)
            self._joined |= joined
            self.boot.mark("invites")
            self.membership.on_leaves(resp.rooms.leave)
            # Before the rooms: a batch's messages are judged with the m.direct written before them.
            self.membership.on_account_data(resp.account_data_events)
            # The test-only catchupAsHistory takes every start's first batch for history (messages sent while
            # the bot was down are lost), as bots that "skip the initial sync" do.
            batch_is_history = (history_first or self._config.catchup_as_history) and first
            for room_id, room in resp.rooms.join.items():
                self._misclassify_direct(room_id)
                events = room.timeline.events
                backlog = 0 if self._config.answer_backlog_on_join else backlog_cutoff(events, self._config.user_id)
                for index, event in enumerate(events):
                    history = batch_is_history or index < backlog
                    if isinstance(event, MegolmEvent):
                        self._undecryptable(event, room_id, history=history)
                        continue
                    if self._pinned_elsewhere(room_id, event):
                        continue
                    await self.router.handle(room_id, event_view(event, room_id), history=history)
            await self.e2ee.on_to_device(self.client, resp.to_device_events)
            self._keys_after_drop(resp.to_device_events)
            await maintain_keys(self.client, upload=not sent)  # one keys/upload a batch, as before the overlap
            self.e2ee.after_keys(self.client)
            await self._retry_decryption()
            self.boot.mark("keys")
            # Only once the batch's messages are in their transcripts may the position move past them: a crash
            # before this point redelivers them, and the transcripts' event ids stop a second answer.
            if self.sessions is not None:
                await self.sessions.flush_appends()
            token = resp.next_batch
            if not forget:
                self._save_token(token)
            # Only now: the server will not send this batch's room keys again, they live in the crypto store alone.
            trace_room_keys(self._trace, self.client.olm, resp.to_device_events)
            first = False
            self._maybe_ready()

    async def _sync_once(self, token: str | None, first: bool,
                         sync_filter: dict[str, Any]) -> SyncResponse | SyncError:
        """One /sync, given up on when it stays silent well past its own timeout (traced sync.stall)."""
        timeout_ms = self._sync_timeout_ms()
        low, high = STALL_GRACE_BOUNDS_S
        stall_s = timeout_ms / 1000 + min(high, max(low, timeout_ms / 2000))
        if self._config.mutated("ignore-sync-stall"):
            stall_s = None  # the bug: wait for an answer however long it takes
        began = mono_ms()
        try:
            return await asyncio.wait_for(self.client.sync(timeout=timeout_ms, since=token, full_state=first,
                                                           sync_filter=sync_filter), stall_s)
        except TimeoutError as exc:
            if stall_s is not None and mono_ms() - began >= stall_s * 1000:
                waited = round(mono_ms() - began)
                self._trace.emit("sync.stall", waitedMs=waited, timeoutMs=timeout_ms)
                return SyncError(f"no answer to /sync within {waited} ms (its timeout was {timeout_ms} ms)")
            return SyncError(f"{type(exc).__name__}: {exc}")
        except (OSError, aiohttp.ClientError) as exc:
            return SyncError(f"{type(exc).__name__}: {exc}")

    async def _relogin_if_deleted(self, resp: SyncError) -> bool:
        if resp.status_code != "M_UNKNOWN_TOKEN" or not self._config.relogin_on_device_deleted:
            return False
        self._trace.emit("device.deleted", deviceId=self.client.device_id, error=resp.message)
        self.client = await self.identity.relogin(self.client)
        self.e2ee.install(self.client)
        return True

    def _sync_timeout_ms(self) -> int:
        """Long-poll as usual, but wake in time to give up on an event whose room key never came."""
        timeout = self._config.sync_timeout_ms
        if not self._undecrypted:
            return timeout
        soonest = min(deadline for _, _, deadline in self._undecrypted.values())
        return max(0, min(timeout, int(soonest - mono_ms()) + 1))

    def _pinned_elsewhere(self, room_id: str, event: Any) -> bool:
        """The test-only mutation first-megolm-session-only: a sender's first Megolm session in a room is the
        only one taken; a message under a later one is dropped as undecryptable (a bot that pinned a session)."""
        session = getattr(event, "session_id", None)
        if not self._config.mutated("first-megolm-session-only") or not getattr(event, "decrypted", False) \
                or not session:
            return False
        if self._pinned.setdefault((room_id, event.sender), session) == session:
            return False
        self._trace.emit("inbound", eventId=event.event_id, roomId=room_id, sender=event.sender, decision="dropped",
                         reason=UNDECRYPTABLE, sessionId=session)
        return True

    def _misclassify_direct(self, room_id: str) -> None:
        """The test-only `two-members-is-dm`: a room with two joined members counted as a direct chat, the way
        bots guess DMs by head count. Correct: an invite flagged is_direct, or the bot's m.direct confirmed by the
        room's members (qa.agent.membership)."""
        room = self.client.rooms.get(room_id) if self._config.mutated("two-members-is-dm") else None
        if room is not None and room.joined_count == 2:
            self.membership.direct_rooms.add(room_id)

    def _undecryptable(self, event: MegolmEvent, room_id: str, *, history: bool) -> None:
        if history or event.sender == self._config.user_id:
            return
        if self._config.mutated("no-late-decrypt"):
            # The test-only bug: a message whose key is not here yet is given up on at once.
            self._trace.emit("inbound", eventId=event.event_id, roomId=room_id, sender=event.sender,
                             decision="dropped", reason=UNDECRYPTABLE, sessionId=event.session_id)
            return
        if event.event_id not in self._undecrypted:
            # Room keys travel separately (to-device) and may arrive a sync or two after the message.
            self._undecrypted[event.event_id] = (event, room_id, mono_ms() + self._config.decrypt_retry_s * 1000)
            self._trace.emit("decrypt.pending", eventId=event.event_id, roomId=room_id, sender=event.sender,
                             sessionId=event.session_id, retryS=self._config.decrypt_retry_s)

    async def _retry_decryption(self) -> None:
        for event_id, (event, room_id, deadline) in list(self._undecrypted.items()):
            try:
                decrypted = self.client.decrypt_event(event)
            except Exception as exc:  # nio raises EncryptionError (and friends) for a missing key
                if mono_ms() < deadline:
                    continue
                del self._undecrypted[event_id]
                self._dropped_sessions.add(event.session_id)
                session = self.sessions.session_for(room_id, None).key if self.sessions else None
                self._trace.emit("inbound", eventId=event_id, roomId=room_id, sender=event.sender, session=session,
                                 decision="dropped", reason=UNDECRYPTABLE, sessionId=event.session_id,
                                 error=f"{type(exc).__name__}: {exc}")
                continue
            del self._undecrypted[event_id]
            self._trace.emit("decrypt.late", eventId=event_id, roomId=room_id, sessionId=event.session_id)
            await self.router.handle(room_id, event_view(decrypted, room_id), history=False)

    def _keys_after_drop(self, to_device: list[Any]) -> None:
        for event in to_device:
            if isinstance(event, RoomKeyEvent) and event.session_id in self._dropped_sessions:
                self._dropped_sessions.discard(event.session_id)
                self._trace.emit("decrypt.key-after-drop", roomId=event.room_id, sender=event.sender,
                                 sessionId=event.session_id, retryS=self._config.decrypt_retry_s)

    def _maybe_ready(self) -> None:
        if self._ready:
            return
        joined = set(self.client.rooms) | self._joined
        if all(room_id in joined for room_id in self._config.rooms):
            self._ready = True
            self._trace.emit("ready", userId=self._config.user_id, rooms=sorted(self._config.rooms),
                             deviceId=self.client.device_id, login=self.identity.login_method, boot=self.boot.summary())

    async def close(self) -> None:
        await self.client.close()


async def join_beside_key_upload(client: Any, membership: Membership, invites: dict[str, Any],
                                 config: AgentConfig) -> tuple[set[str], bool]:
    """Join or decline a batch's invites; any key upload due in that batch goes out beside the joins.

    Returns the rooms joined and whether a key upload went out (then the batch's `maintain_keys` sends none).
    A key upload due in a batch with invites (a new device's first, or an existing device's one-time key
    top-up) was sent by the batch's key upkeep, after the joins; both are round trips to the homeserver that
    need nothing of each other, and `ready` waits for both (an encrypted bot's start: ~70-100 ms of upload
    after ~100 ms of join, issue 29). It is the same request, taken from the same account state (the batch's
    sync is already handled), and still one a batch: the upkeep skips its own upload, so a refused one is
    tried again by the next batch's upkeep, as before. The trace (the `invite` records, written as the joins
    come back) is unchanged.

    A join that fails lets an upload in flight come back (bounded by UPLOAD_SETTLE_S) before the error goes
    on: nio saves the account's one-time keys as published only when the response arrives, and keys the
    server took but the store does not know are regenerated under the same ids on a restart, which the
    server refuses ("One time key ... already exists"). A stop (the task cancelled, SIGTERM) cancels the
    upload at once: that window, an upload the server took whose answer the bot never read, is the one an
    upload inside maintain_keys always had."""
    upload = (asyncio.create_task(client.keys_upload(), name="keys-upload")
              if invites and client.olm and client.should_upload_keys else None)
    try:
        joined = await membership.on_invites(client, invites, config)
    except Exception:
        if upload is not None:
            await _settle(upload, UPLOAD_SETTLE_S)
        raise
    except BaseException:
        if upload is not None:  # the bot stops: not an upload to leave running
            await _settle(upload, 0)
        raise
    if upload is not None:
        await upload  # as maintain_keys would: an error response is nio's to note, an exception ends the run
    return joined, upload is not None


async def _settle(task: asyncio.Task[Any], timeout_s: float) -> None:
    """Wait up to timeout_s for the task, then cancel it; never leaves it running, never raises its error."""
    try:
        if timeout_s > 0:
            await asyncio.wait({task}, timeout=timeout_s)
    finally:
        task.cancel()  # a no-op once it is done
        await asyncio.gather(task, return_exceptions=True)


def _retry_delay(config: AgentConfig, failures: int, retry_after_ms: int | None) -> float:
    """Bounded backoff after a failed /sync: growing, never past the last step (the test-only mutation retries at
    once); the server's Retry-After wins, capped (unless the test-only mutation ignores it)."""
    delay = 0.0 if config.mutated("sync-retry-at-once") else RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
    if retry_after_ms and not config.mutations.ignore_retry_after:
        delay = min(retry_after_ms / 1000, MAX_RETRY_AFTER_S)
    return delay


def _restarted(config: AgentConfig, token: str | None, first: bool, history_first: bool
               ) -> tuple[str | None, bool, bool]:
    """The sync position after a failed /sync: kept; the test-only bug sync-restart-on-error starts over from
    nothing (no position, the next batch taken for history), so what came while the syncs failed is lost."""
    return (None, True, True) if config.mutated("sync-restart-on-error") else (token, first, history_first)


def _room_members(client: Any, room_id: str) -> tuple[int, set[str]] | None:
    """A room's joined count and joined members as the bot's client knows them (None: a room it does not know)."""
    room = client.rooms.get(room_id)
    if room is None:
        return None
    return room.joined_count, {user for user, member in room.users.items() if not member.invited}
