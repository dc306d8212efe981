"""The bot's Matrix edge: a matrix-nio client, a sync loop that keeps its position, and send helpers.

The loop is written out (rather than nio's sync_forever) because the bot must persist its sync token only
after it has handed the batch's events on, and must say "ready" once its rooms are joined.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from nio import MegolmEvent, RoomSendError, SyncError

from qa.agent.approval_flow import ApprovalFlow
from qa.agent.config import AgentConfig
from qa.agent.crypto_store import CryptoIdentity
from qa.agent.formatting import reply_contents
from qa.agent.membership import Membership, backlog_cutoff
from qa.agent.policy import (
    DUPLICATE,
    HISTORY,
    REDACTION,
    UNDECRYPTABLE,
    Inbound,
    conversation_root,
    decide,
    decide_reaction,
    decide_redaction,
    parse_inbound,
    redacted_event_id,
    reply_thread,
    session_key,
)
from qa.agent.session import SessionManager
from qa.agent.verification import VERIFICATION, BotE2EE, send_in_the_clear
from qa.kernel.clock import mono_ms
from qa.kernel.e2ee import event_view, maintain_keys
from qa.kernel.errors import InfraError
from qa.kernel.trace import Trace

log = logging.getLogger("qa.agent.matrix")

SYNC_TIMEOUT_MS = 30_000
# Catch-up after downtime comes in one batch as long as fewer events than this arrived meanwhile.
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
# Retry pacing when the homeserver is unreachable (e.g. restarting): a backoff, not a synchronization point.
RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)
# A send is tried this often (429s, 5xx, dropped connections), always under one transaction id, so however
# many tries reach the homeserver it makes one event.
SEND_ATTEMPTS = 6
MAX_RETRY_AFTER_S = 30.0  # a homeserver asking for longer is not waited for: the send is given up, traced


def reply_content(text: str, thread_root: str | None, in_reply_to: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": text, "m.mentions": {}}
    if thread_root:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": in_reply_to or thread_root},
        }
    return content


class MatrixBot:
    def __init__(self, config: AgentConfig, trace: Trace, password: str) -> None:
        self._config = config
        self._trace = trace
        self._password = password
        state = Path(config.state_dir)
        self._token_path = state / "sync-token.json"
        # The crypto store and a stable device id are what let an encrypted bot decrypt after a restart.
        self.identity = CryptoIdentity(config, trace, password)
        self.client = self.identity.new_client(self.identity.device_id())
        self.e2ee = BotE2EE(config, trace)
        # Encrypted events we could not decrypt yet: event id -> (event, room id, give-up time on mono clock)
        self._undecrypted: dict[str, tuple[MegolmEvent, str, float]] = {}
        self.sessions: SessionManager | None = None
        self.approvals: ApprovalFlow | None = None
        self._sent: dict[str, tuple[str, str | None]] = {}  # bot event id -> (room, thread root)
        # Reactions recorded in a session, so their removal can be recorded there too: reaction event id ->
        # (room, thread root, sender, key, annotated event). In memory only: a restart forgets them.
        self._reactions: dict[str, tuple[str, str | None, str, str, str]] = {}
        self._mutations = config.mutations.policy()
        self._ready = False
        self.membership = Membership(state, config.user_id, trace, forget=config.forget_state_on_start)

    @property
    def config(self) -> AgentConfig:
        return self._config

    def reconfigure(self, config: AgentConfig) -> None:
        """A reloaded config (qa.agent.reload): the next event is decided by it."""
        self._config = config

    def _policy(self, room_id: str) -> Any:
        return self._config.room_policy(room_id, joined_at_runtime=room_id in self.membership.runtime_rooms,
                                        direct=room_id in self.membership.direct_rooms)

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

    async def post(self, room_id: str, content: dict[str, Any], thread_root: str | None) -> str | None:
        """Send any message content (approval requests, outcomes), in the session's thread when it has one."""
        if thread_root:
            content = {**content, "m.relates_to": reply_content("", thread_root, None)["m.relates_to"]}
        return await self._send(room_id, "m.room.message", content, thread_root)

    async def post_content(self, room_id: str, content: dict[str, Any], thread_root: str | None) -> str | None:
        """Send message content as it is (streaming drafts and edits carry their own relations)."""
        return await self._send(room_id, "m.room.message", content, thread_root)

    async def react(self, room_id: str, target: str, key: str) -> str | None:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
        return await self._send(room_id, "m.reaction", content, None)

    async def send_reply(self, room_id: str, text: str, thread_root: str | None, in_reply_to: str | None) -> str | None:
        """Post an answer: markdown as sanitized HTML, split into ordered parts when it is long. Returns the
        first part's id (what the reply "is"); a split reply also traces `reply.parts` with every part."""
        replies, bugs = self._config.replies, self._config.mutations
        if self._config.reply_in_first_room and self._config.rooms:
            room_id = next(iter(self._config.rooms))  # the test-only mutation: answers leave their room
        thread = reply_thread(thread_root, replies.thread_replies)
        if thread:
            fallback = thread if bugs.reply_fallback_to_root else in_reply_to
            relates: dict[str, Any] | None = reply_content("", thread, fallback)["m.relates_to"]
        else:
            # At the top level the answer carries no relation, unless its trigger was in a thread that the
            # answer leaves (threadReplies: off): then a rich reply says what it answers.
            relates = {"m.in_reply_to": {"event_id": in_reply_to}} if thread_root and in_reply_to else None
        contents = reply_contents(text, relates, limit=replies.text_chunk_limit, markdown=replies.markdown,
                                  raw_html=bugs.raw_html, truncate=bugs.truncate_long_replies)
        sent: list[str] = []
        for content in contents:
            event_id = await self._send(room_id, "m.room.message", content, thread)
            if event_id is None:
                break  # a gap in the middle would garble the answer; the send error is traced
            sent.append(event_id)
        if len(contents) > 1:
            self._trace.emit("reply.parts", inReplyTo=in_reply_to, roomId=room_id, parts=sent,
                             expected=len(contents))
        return sent[0] if sent else None

    async def send_notice(self, room_id: str, text: str, thread_root: str | None, in_reply_to: str | None
                          ) -> str | None:
        content = {**reply_content(text, thread_root, in_reply_to), "msgtype": "m.notice"}
        return await self._send(room_id, "m.room.message", content, thread_root)

    async def _send(
        self, room_id: str, event_type: str, content: dict[str, Any], thread_root: str | None
    ) -> str | None:
        mutations = self._config.mutations
        txn = uuid.uuid4().hex
        for tries in range(1, SEND_ATTEMPTS + 1):
            if mutations.new_txn_id_on_retry:
                txn = uuid.uuid4().hex  # the mutation: each try is a new event to the homeserver
            try:
                if self._config.send_in_the_clear:  # the E2EE test-only mutation
                    resp: Any = await send_in_the_clear(self.client, room_id, event_type, content)
                else:
                    # Trust on first use: room keys go to every device of the room's members (qa.kernel.e2ee, README),
                    # unless roomKeys: verified withholds them from unverified devices (qa.agent.verification).
                    resp = await self.client.room_send(
                        room_id, event_type, content, tx_id=txn,
                        ignore_unverified_devices=self.e2ee.before_send(self.client, room_id))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                resp, status, error = None, None, f"{type(exc).__name__}: {exc}"
            else:
                if not isinstance(resp, RoomSendError):
                    if event_type == "m.room.message":
                        self._sent[resp.event_id] = (room_id, thread_root)
                    return str(resp.event_id)
                status = getattr(getattr(resp, "transport_response", None), "status", None)
                error = f"{resp.status_code or ''} {resp.message}".strip()
            retryable = resp is None or status in (429, 502, 503, 504) or resp.status_code == "M_LIMIT_EXCEEDED"
            asked = (resp.retry_after_ms / 1000) if resp is not None and resp.retry_after_ms else None
            if not retryable or tries == SEND_ATTEMPTS or (asked or 0) > MAX_RETRY_AFTER_S:
                self._trace.emit("error", where=f"send {event_type}", roomId=room_id, status=status, error=error,
                                 tries=tries, txnId=txn)
                if mutations.crash_on_send_error:
                    raise SystemExit(3)  # the mutation: a refused send takes the whole bot down
                return None
            delay = RETRY_DELAYS_S[min(tries - 1, len(RETRY_DELAYS_S) - 1)]
            if asked is not None and not mutations.ignore_retry_after:
                delay = asked
            self._trace.emit("send.retry", roomId=room_id, eventType=event_type, status=status, error=error,
                             tries=tries, txnId=txn, retryInMs=round(delay * 1000))
            await asyncio.sleep(delay)  # pacing the homeserver asked for, not a synchronization
        return None

    async def run(self) -> None:
        token = self._load_token()
        forget = self._config.forget_state_on_start
        # A bot that never synced treats what is already in its rooms as history. The test-only mutation
        # `forgetStateOnStart` behaves like a bot that keeps no state at all: everything looks new.
        history_first = token is None and not forget
        first = True
        failures = 0
        if self.sessions is not None and not forget:
            resumed = self.sessions.resume_interrupted()
            if resumed:
                self._trace.emit("resume", interruptedTurns=resumed)
        while True:
            try:
                resp = await self.client.sync(timeout=self._sync_timeout_ms(), since=token, full_state=first,
                                              sync_filter=SYNC_FILTER)
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                resp = SyncError(f"{type(exc).__name__}: {exc}")
            if isinstance(resp, SyncError) and await self._relogin_if_deleted(resp):
                first = True  # a new client knows no room yet: full state again (the position is kept)
                continue
            if isinstance(resp, SyncError):
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                if resp.retry_after_ms and not self._config.mutations.ignore_retry_after:
                    delay = min(resp.retry_after_ms / 1000, MAX_RETRY_AFTER_S)
                failures += 1
                self._trace.emit("error", where="sync", error=resp.message, retryInS=delay)
                if self._config.mutations.give_up_on_sync_error:
                    raise InfraError(f"sync failed: {resp.message} (mutation giveUpOnSyncError)")
                # The same `since` again: whatever arrived meanwhile comes in the next batch, nothing is skipped.
                await asyncio.sleep(delay)
                continue
            if failures:
                self._trace.emit("sync.resumed", afterFailures=failures)
            failures = 0
            await self.membership.on_invites(self.client, resp.rooms.invite, self._config)
            self.membership.on_leaves(resp.rooms.leave)
            # The test-only catchupAsHistory takes every start's first batch for history (messages sent while
            # the bot was down are lost), as bots that "skip the initial sync" do.
            batch_is_history = (history_first or self._config.catchup_as_history) and first
            for room_id, room in resp.rooms.join.items():
                events = room.timeline.events
                backlog = 0 if self._config.answer_backlog_on_join else backlog_cutoff(events, self._config.user_id)
                for index, event in enumerate(events):
                    history = batch_is_history or index < backlog
                    if isinstance(event, MegolmEvent):
                        self._undecryptable(event, room_id, history=history)
                        continue
                    await self._handle(room_id, event_view(event, room_id), history=history)
            await self.e2ee.on_to_device(self.client, resp.to_device_events)
            await maintain_keys(self.client)
            self.e2ee.after_keys(self.client)
            await self._retry_decryption()
            # Only once the batch's messages are in their transcripts may the position move past them: a crash
            # before this point redelivers them, and the transcripts' event ids stop a second answer.
            if self.sessions is not None:
                await self.sessions.flush_appends()
            token = resp.next_batch
            if not forget:
                self._save_token(token)
            first = False
            self._maybe_ready()

    async def _relogin_if_deleted(self, resp: SyncError) -> bool:
        if resp.status_code != "M_UNKNOWN_TOKEN" or not self._config.relogin_on_device_deleted:
            return False
        self._trace.emit("device.deleted", deviceId=self.client.device_id, error=resp.message)
        self.client = await self.identity.relogin(self.client)
        self.e2ee.install(self.client)
        return True

    def _sync_timeout_ms(self) -> int:
        """Long-poll as usual, but wake in time to give up on an event whose room key never came."""
        if not self._undecrypted:
            return SYNC_TIMEOUT_MS
        soonest = min(deadline for _, _, deadline in self._undecrypted.values())
        return max(0, min(SYNC_TIMEOUT_MS, int(soonest - mono_ms()) + 1))

    def _undecryptable(self, event: MegolmEvent, room_id: str, *, history: bool) -> None:
        if history or event.sender == self._config.user_id:
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
                session = self.sessions.session_for(room_id, None).key if self.sessions else None
                self._trace.emit("inbound", eventId=event_id, roomId=room_id, sender=event.sender, session=session,
                                 decision="dropped", reason=UNDECRYPTABLE, sessionId=event.session_id,
                                 error=f"{type(exc).__name__}: {exc}")
                continue
            del self._undecrypted[event_id]
            self._trace.emit("decrypt.late", eventId=event_id, roomId=room_id, sessionId=event.session_id)
            await self._handle(room_id, event_view(decrypted, room_id), history=False)

    def _maybe_ready(self) -> None:
        if self._ready:
            return
        joined = set(self.client.rooms)
        if all(room_id in joined for room_id in self._config.rooms):
            self._ready = True
            self._trace.emit("ready", userId=self._config.user_id, rooms=sorted(self._config.rooms),
                             deviceId=self.client.device_id)

    async def _handle(self, room_id: str, source: dict[str, Any], *, history: bool) -> None:
        etype = source.get("type")
        if etype == "m.reaction":
            await self._handle_reaction(room_id, source)
            return
        if etype == "m.room.redaction":
            await self._handle_redaction(room_id, source, history=history)
            return
        if etype != "m.room.message":
            return
        source = self.e2ee.inbound_view(source)
        event = {**source, "room_id": room_id}
        inbound = parse_inbound(event, self._config.user_id, self._mutations)
        if inbound.media is not None and self._config.mutated("attachment-bypasses-mention"):
            inbound = replace(inbound, mentioned=True)  # the test-only bug
        await self._decide_and_submit(inbound, history=history,
                                      verification=self.e2ee.is_verification_notice(source))

    async def _decide_and_submit(self, inbound: Inbound, *, history: bool, verification: bool = False) -> None:
        assert self.sessions is not None
        if verification:
            decision_label, reason = "dropped", VERIFICATION
        elif history:
            decision_label, reason = "dropped", HISTORY
        else:
            decision = decide(inbound, self._config.user_id, self._policy(inbound.room_id), self._mutations)
            decision_label, reason = decision.label, decision.reason
        if decision_label == "accepted":
            # threadReplies: always puts a top-level trigger's conversation in a thread on it, so the
            # duplicate check below looks in the session the message was filed in the first time.
            inbound = replace(inbound, thread_root=conversation_root(
                inbound.thread_root, inbound.event_id, self._config.replies.thread_replies))
            if not self._config.trust_sync_position and self.sessions.already_seen(inbound):
                decision_label, reason = "dropped", DUPLICATE
        self._trace.emit("inbound", eventId=inbound.event_id, roomId=inbound.room_id, sender=inbound.sender,
                         session=session_key(inbound.room_id, inbound.thread_root), decision=decision_label,
                         reason=reason)
        if decision_label == "accepted":
            self.sessions.submit(inbound)

    async def _handle_redaction(self, room_id: str, source: dict[str, Any], *, history: bool) -> None:
        """A redaction is never answered. When it removes a reaction the bot recorded, the removal is recorded
        in that reaction's session too, so the model no longer takes the reaction as standing."""
        sender = str(source.get("sender", ""))
        if sender == self._config.user_id:
            return
        event_id = str(source.get("event_id", ""))
        content = source.get("content") or {}
        if self._config.mutations.redactions_as_messages:
            # The bug: every room event taken for a message; the redaction's reason becomes its text.
            await self._decide_and_submit(Inbound(event_id=event_id, room_id=room_id, sender=sender,
                                                  msgtype="m.text", body=str(content.get("reason", "")),
                                                  mentioned=False), history=history)
            return
        decision = decide_redaction(sender, self._config.user_id, self._policy(room_id))
        reason = HISTORY if history else decision.reason
        target = redacted_event_id(source)
        self._trace.emit("inbound", eventId=event_id, roomId=room_id, sender=sender, redacts=target,
                         session=None, decision="dropped", reason=reason)
        removed = self._reactions.pop(target, None) if target and reason == REDACTION else None
        if removed is None or self._config.mutations.ignore_redactions or self.sessions is None:
            return
        _room, thread_root, reactor, key, annotated = removed
        recorded = await self.sessions.record_notice(room_id, thread_root, {
            "eventId": event_id, "sender": sender,
            "content": f"{sender} removed the reaction {key} by {reactor} from message {annotated}",
        })
        self._trace.emit("reaction.removed", eventId=event_id, roomId=room_id, sender=sender, redacts=target,
                         key=key, target=annotated, session=session_key(room_id, thread_root),
                         decision="recorded" if recorded else "ignored", reason=REDACTION)

    async def _handle_reaction(self, room_id: str, source: dict[str, Any]) -> None:
        relates = (source.get("content") or {}).get("m.relates_to") or {}
        target = relates.get("event_id")
        sender = source.get("sender")
        if sender == self._config.user_id or relates.get("rel_type") != "m.annotation":
            return
        where = self._sent.get(target) if target else None
        decision = decide_reaction(str(sender), self._config.user_id, self._policy(room_id),
                                   on_bot_message=where is not None)
        if self.approvals is not None and target and self.approvals.on_reaction(
                str(sender), str(relates.get("key")), target, str(source.get("event_id"))):
            return  # a decision (or an ignored try) on a pending approval, traced by the approval flow
        if where is not None and self._config.mutations.answer_reactions:
            # The bug: a reaction taken for a message addressed to the bot.
            await self._decide_and_submit(Inbound(
                event_id=str(source.get("event_id", "")), room_id=room_id, sender=str(sender), msgtype="m.text",
                body=f"reacted {relates.get('key')}", mentioned=True, thread_root=where[1]), history=False)
            return
        session = None
        recorded = False
        thread_root = None if where is None or self._config.mutations.reactions_to_main_session else where[1]
        if decision.accept and where is not None and self.sessions is not None:
            session = self.sessions.session_for(room_id, thread_root).key
            # Written before it is traced, so "recorded" in the trace means the transcript already has it and
            # the session's next model request will carry it.
            recorded = await self.sessions.record_notice(room_id, thread_root, {
                # The transcript schema is fixed, so who/key/which message travel in the content.
                "eventId": source.get("event_id"), "sender": sender,
                "content": f"{sender} reacted {relates.get('key')} to message {target}",
            })
        if recorded:
            self._reactions[str(source.get("event_id"))] = (room_id, thread_root, str(sender),
                                                            str(relates.get("key")), str(target))
        self._trace.emit("reaction", eventId=source.get("event_id"), roomId=room_id, sender=sender,
                         key=relates.get("key"), target=target, session=session,
                         decision="recorded" if recorded else "ignored", reason=decision.reason)

    async def close(self) -> None:
        await self.client.close()
