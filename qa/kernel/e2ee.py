"""End-to-end encryption upkeep shared by the bot and the test users (both matrix-nio clients).

A hand-written sync loop must do between syncs what nio's sync_forever would: upload our keys, learn other
devices' keys, claim one-time keys for new Olm sessions, and flush queued to-device messages (room keys).
Trust policy: trust on first use — room keys are shared with every device of the room's members, verified or
not, because test users and bots have no out-of-band channel to verify each other.
"""

from __future__ import annotations

from typing import Any

from nio import AsyncClient

MEGOLM = "m.megolm.v1.aes-sha2"
ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}


async def maintain_keys(client: AsyncClient, *, upload: bool = True) -> None:
    """A batch's key upkeep. upload=False: this batch's key upload already went out (the embedded agent sends it
    beside its joins), so none is sent again in the same batch, even if the server refused it."""
    if not client.olm:
        return
    if upload and client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()


def event_view(event: Any, room_id: str) -> dict[str, Any]:
    """The event as steps and policy see it: decrypted content when nio could decrypt it, marked as such."""
    view = {**event.source, "room_id": room_id}
    if getattr(event, "decrypted", False):
        view["decrypted"] = True
    if getattr(event, "session_id", None):
        # Which Megolm session carried it (in the clear on the wire anyway): expect_encrypted reads it.
        view["_megolm"] = {"sessionId": event.session_id, "senderKey": getattr(event, "sender_key", None)}
    return view


# --- what the E2EE steps read from a test user's crypto store (issue 15) -----------------------------------

BARRIER_TYPE = "org.matrix_qa.barrier"


class VerificationStalled(Exception):
    """The SAS flow stopped at `stage` (what we were waiting for), with what was seen instead."""

    def __init__(self, stage: str, seen: list[str], tx: str | None = None) -> None:
        super().__init__(stage)
        self.stage = stage
        self.seen = seen
        self.tx = tx


def has_room_key(client: AsyncClient, room_id: str, sender_key: str, session_id: str) -> bool:
    return bool(client.olm) and client.olm.inbound_group_store.get(room_id, sender_key, session_id) is not None


def sas_view(sas: Any) -> dict[str, Any]:
    return {"emoji": [name for _, name in sas.get_emoji()], "decimals": list(sas.get_decimals())}


def sas_mismatch(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Pure: how two sides' short authentication strings differ (empty: they match)."""
    return [f"{k}: ours {ours.get(k)} vs the bot's {theirs.get(k)}" for k in ("emoji", "decimals")
            if list(ours.get(k) or []) != list(theirs.get(k) or [])]


def session_comparison(first: str | None, second: str | None, want: str) -> str | None:
    """Pure: the problem when two events' Megolm session ids are not `new` (different) or `same`."""
    if not first or not second:
        return "an event carries no Megolm session id (not encrypted?)"
    if want == "new" and first == second:
        return f"both use Megolm session {first}: the bot did not start a new one"
    if want == "same" and first != second:
        return f"Megolm sessions differ: {first} then {second}"
    return None
