"""The bot's side of E2EE beyond trust on first use: SAS verification, which devices get room keys, and the
devices it learns about — each decision traced, so scenarios prove it from the trace.

matrix-nio (0.26) speaks the to-device SAS flow that begins with m.key.verification.start (no
m.key.verification.request/ready, no in-room verification, no cross-signing). The bot takes part when
`acceptVerification` is on: it accepts, traces the short authentication string it computed (emoji and
decimals, so whoever verifies can compare them out of band), confirms it, and marks the device verified once
the other side's MAC checks out — nio does that check. The bot has no person to compare the emoji, so the
comparison is the other side's; the trace is the bot's "screen".
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from nio import (
    Api,
    AsyncClient,
    KeyVerificationCancel,
    KeyVerificationEvent,
    KeyVerificationKey,
    KeyVerificationMac,
    KeyVerificationStart,
    RoomSendResponse,
)

from qa.agent.config import AgentConfig
from qa.agent.room_keys import LateCryptoSaves
from qa.kernel.e2ee import sas_view
from qa.kernel.trace import Trace

log = logging.getLogger("qa.agent.verification")
VERIFICATION = "verification"  # the inbound drop reason for verification notices


def devices_to_withhold(devices: list[Any], own_device: str, is_verified: Any, is_blacklisted: Any) -> list[Any]:
    """Pure: the devices a verified-only bot must keep its room keys from (not yet blacklisted, not ours)."""
    return [d for d in devices if d.id != own_device and not is_verified(d) and not is_blacklisted(d)]


class BotE2EE:
    def __init__(self, config: AgentConfig, trace: Trace) -> None:
        self._config = config
        self._trace = trace
        self._known: set[tuple[str, str]] = set()
        self._done: set[str] = set()  # transaction ids whose outcome is traced
        self._late_saves: LateCryptoSaves | None = None  # only for the late-crypto-save mutation

    def install(self, client: AsyncClient) -> None:
        if self._config.keep_megolm_session:
            # The mutation: nio starts a new Megolm session when membership or devices change; this keeps the
            # first one, so whoever left still holds the key to what comes next, and newcomers get none.
            client._invalidate_session_for_member_event = lambda room_id: None  # type: ignore[method-assign]
            client.invalidate_outbound_session = lambda room_id: None  # type: ignore[method-assign]
        late = self._config.mutated("late-crypto-save") and client.olm is not None
        self._late_saves = LateCryptoSaves(client.olm) if late else None

    async def on_to_device(self, client: AsyncClient, events: list[Any]) -> None:
        if self._late_saves is not None:
            self._late_saves.batch_done()
        for event in events:
            if isinstance(event, KeyVerificationEvent):
                await self._verification(client, event)

    async def _verification(self, client: AsyncClient, event: KeyVerificationEvent) -> None:
        tx = event.transaction_id
        sas = client.key_verifications.get(tx)
        where = {"transactionId": tx, "userId": event.sender}
        if isinstance(event, KeyVerificationStart):
            where["deviceId"] = event.from_device
            if sas is None:
                # nio only answers devices it knows; the sender must query again and retry.
                self._trace.emit("verification.unknown-device", **where)
                return
            if not self._config.accept_verification:
                await client.cancel_key_verification(tx)
                self._trace.emit("verification.refused", **where, reason="acceptVerification is off")
                self._done.add(tx)
                return
            await client.accept_key_verification(tx)
            self._trace.emit("verification.accepted", **where, method=event.method)
            return
        if sas is None or tx in self._done:
            return
        where["deviceId"] = sas.other_olm_device.id
        if isinstance(event, KeyVerificationCancel):
            self._trace.emit("verification.cancelled", **where, code=event.code, reason=event.reason)
            self._done.add(tx)
        elif isinstance(event, KeyVerificationKey) and not sas.canceled:
            self._trace.emit("verification.sas", **where, **sas_view(sas))
            # nio queued our key; it must leave before our MAC does, or the other side sees the MAC first.
            await client.send_to_device_messages()
            await client.confirm_short_auth_string(tx)
        elif isinstance(event, KeyVerificationMac) and sas.canceled:
            self._trace.emit("verification.cancelled", **where, code=sas.cancel_code, reason=sas.cancel_reason)
            self._done.add(tx)
        if sas.verified and tx not in self._done:
            self._done.add(tx)
            # nio's own MAC handling marks the device verified without starting new Megolm sessions; a device
            # that just became trusted (say, after being withheld from) must get the next room key.
            client._invalidate_outbound_sessions(sas.other_olm_device)
            self._trace.emit("verification.done", **where, verified=client.olm.is_device_verified(sas.other_olm_device))

    def after_keys(self, client: AsyncClient) -> None:
        """Trace every device of an encrypted room's members the first time the bot knows it."""
        if not client.olm:
            return
        for room in client.rooms.values():
            if not room.encrypted:
                continue
            for user_id in room.users:
                for device in client.device_store.active_user_devices(user_id):
                    key = (user_id, device.id)
                    if key in self._known or device.id == client.device_id:
                        continue
                    self._known.add(key)
                    self._trace.emit("e2ee.device", userId=user_id, deviceId=device.id,
                                     verified=client.olm.is_device_verified(device))

    def before_send(self, client: AsyncClient, room_id: str) -> bool:
        """Whether unverified devices may get the room key (nio's ignore_unverified_devices)."""
        if self._config.room_keys == "all" or not client.olm:
            return True  # trust on first use: nothing to look up
        room = client.rooms.get(room_id)
        if room is None or not room.encrypted:
            return True
        devices = [d for u in room.users for d in client.device_store.active_user_devices(u)]
        for device in devices_to_withhold(devices, client.device_id, client.olm.is_device_verified,
                                          client.olm.is_device_blacklisted):
            # Blacklisted devices get no room key; verifying one later lifts it and starts a new session.
            client.blacklist_device(device)
            self._trace.emit("e2ee.withheld", roomId=room_id, userId=device.user_id, deviceId=device.id,
                             reason="unverified")
        return False

    @staticmethod
    def is_verification_notice(source: dict[str, Any]) -> bool:
        """An in-room verification request (Element's msgtype m.key.verification.request): not a question."""
        return str((source.get("content") or {}).get("msgtype", "")).startswith("m.key.verification.")

    def inbound_view(self, source: dict[str, Any]) -> dict[str, Any]:
        """The message as the conversation sees it; the test-only mutations change what that is."""
        content = source.get("content") or {}
        if self._config.log_decrypted_bodies and source.get("decrypted"):
            # The mutation: a debugging line that leaks what end-to-end encryption protected into the log.
            log.info("decrypted %s: %s", source.get("event_id"), content.get("body"))
        if self._config.answer_verification_notices and self.is_verification_notice(source):
            # The mutation: a bot that reads every message's body, so a verification request is text to it.
            return {**source, "content": {**content, "msgtype": "m.text"}}
        return source


async def send_in_the_clear(client: AsyncClient, room_id: str, event_type: str, content: dict[str, Any]) -> Any:
    """The sendInTheClear mutation: straight to the API, so nio cannot encrypt it (a bot that bypasses E2EE)."""
    method, path, data = Api.room_send(client.access_token, room_id, event_type, content, str(uuid.uuid4()))
    return await client._send(RoomSendResponse, method, path, data, (room_id,))
