"""The bot's inbound edge: what each timeline event the sync loop hands on becomes. A message is decided
(qa.agent.policy) and submitted to its session; a reaction or a redaction is recorded in the transcript of the
conversation it belongs to, or taken by a pending approval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from qa.agent.approval_flow import ApprovalFlow
from qa.agent.config import AgentConfig
from qa.agent.membership import Membership
from qa.agent.policy import (
    DUPLICATE,
    HISTORY,
    REDACTION,
    SENDER_NOT_ALLOWED,
    Decision,
    Inbound,
    conversation_root,
    decide,
    decide_reaction,
    decide_redaction,
    guard_bot_loop,
    parse_inbound,
    redacted_event_id,
    session_key,
)
from qa.agent.session import SessionManager
from qa.agent.verification import VERIFICATION, BotE2EE
from qa.kernel.trace import Trace

SLOW_ON_BLOCKED_S = 3.0  # the test-only `slow-on-blocked`: what each blocked message costs the loop


class EventRouter:
    """Routes one decrypted room event: messages to a decision and a session, reactions and redactions to a
    transcript notice (or an approval)."""

    def __init__(self, config: Callable[[], AgentConfig], trace: Trace, e2ee: BotE2EE, membership: Membership,
                 sent: dict[str, tuple[str, str | None]]) -> None:
        self._current_config = config  # read at each event: a reloaded config decides the next one
        self._trace = trace
        self.e2ee = e2ee
        self.membership = membership
        self._sent = sent  # the sender's record of the bot's own messages: bot event id -> (room, thread root)
        # Reactions recorded in a session, so their removal can be recorded there too: reaction event id ->
        # (room, thread root, sender, key, annotated event). In memory only: a restart forgets them.
        self._reactions: dict[str, tuple[str, str | None, str, str, str]] = {}
        self._mutations = config().mutations.policy()
        self._bot_streaks: dict[tuple[str, str | None], int] = {}  # answered bot messages in a row, per conversation
        self.sessions: SessionManager | None = None
        self.approvals: ApprovalFlow | None = None

    @property
    def _config(self) -> AgentConfig:
        return self._current_config()

    def _policy(self, room_id: str) -> Any:
        return self._config.room_policy(room_id, joined_at_runtime=room_id in self.membership.runtime_rooms,
                                        direct=self.membership.is_direct(
                                            room_id, trust_m_direct=self._config.mutated("trust-m-direct"),
                                            any_pair=self._config.mutated("m-direct-any-pair")))

    async def handle(self, room_id: str, source: dict[str, Any], *, history: bool) -> None:
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
            decision = self._loop_guard(inbound, decision)
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
        elif reason == SENDER_NOT_ALLOWED and self._config.mutated("slow-on-blocked"):
            # The test-only bug: a blocked sender costs the loop time (a profile lookup, a model call thrown
            # away), so the next allowed message waits behind it. Correct: a drop costs nothing.
            await asyncio.sleep(SLOW_ON_BLOCKED_S)

    def _loop_guard(self, inbound: Inbound, decision: Decision) -> Decision:
        """Counts answered bot messages in a row per conversation (room, thread) and stops a bot-to-bot loop
        (qa.agent.policy.guard_bot_loop). In memory: a restart starts every count again, a bounded cost."""
        where = (inbound.room_id, inbound.thread_root)
        from_bot = inbound.sender in self._config.known_bots
        decision, self._bot_streaks[where] = guard_bot_loop(decision, from_bot, self._bot_streaks.get(where, 0),
                                                            self._config.bot_loop_limit)
        return decision

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
            return  # a decision (or an ignored or late try) on an approval, traced by the approval flow
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
