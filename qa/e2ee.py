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


async def maintain_keys(client: AsyncClient) -> None:
    if not client.olm:
        return
    if client.should_upload_keys:
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
    return view
