"""What tells one Olm-encrypted to-device message from another without decrypting it: its ciphertext bodies,
which the homeserver hands the recipient exactly as the sender wrote them. Pure."""

from __future__ import annotations

import json
from typing import Any


def olm_bodies(content: Any) -> set[str]:
    """The ciphertext bodies of an Olm-encrypted to-device content ({ciphertext: {recipient key: {type, body}}})."""
    ciphertext = content.get("ciphertext") if isinstance(content, dict) else None
    if not isinstance(ciphertext, dict):
        return set()
    return {part["body"] for part in ciphertext.values()
            if isinstance(part, dict) and isinstance(part.get("body"), str)}


def sent_bodies(request_body: Any) -> set[str]:
    """The ciphertext bodies of every message in a sendToDevice request's JSON ({messages: {user: {device:
    content}}}); nothing for a body that is not one."""
    try:
        data = json.loads(request_body) if isinstance(request_body, str | bytes) else request_body
    except ValueError:
        return set()
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, dict):
        return set()
    return {body for devices in messages.values() if isinstance(devices, dict)
            for content in devices.values() for body in olm_bodies(content)}
