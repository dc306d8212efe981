"""Attachments: what the bot makes of an m.image / m.audio / m.video / m.file, and how it fetches one.

Images reach the model as OpenAI chat `image_url` content parts carrying a data URL; every other type is
described to the model in words (name, type, size), because a chat model cannot take it. Attachments over
the configured size are refused with a reply before anything is downloaded (the declared `info.size`), and a
download that turns out larger than declared is cut off at the limit. Downloads use the authenticated media
endpoint (`/_matrix/client/v1/media/download`, Matrix 1.11) with the bot's access token, and fall back to the
legacy one (`/_matrix/media/v3/download`) when a homeserver does not know the new one (404, 405, or 400
M_UNRECOGNIZED) or it fails (5xx); which one served is traced. When neither serves the file, the person gets
one reply that says so; the model is not asked about an image it never saw. An encrypted room's attachment (`file`, an
EncryptedFile) is decrypted and its hash checked with nio's attachment helpers.

No lock is held anywhere in here: fetching media is I/O, like a model call.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

MEDIA_MSGTYPES = frozenset({"m.image", "m.audio", "m.video", "m.file"})
# What OpenAI-style vision input accepts.
MODEL_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
DOWNLOAD_PATH = "/_matrix/client/v1/media/download"
LEGACY_DOWNLOAD_PATH = "/_matrix/media/v3/download"
# The authenticated endpoint's answers that mean "not here, try the legacy one" (a server before Matrix 1.11);
# a 5xx is tried there too. A 401/403 is not: the other endpoint would not know the bot better.
FALLBACK_STATUSES = frozenset({400, 404, 405})
DOWNLOAD_TIMEOUT_S = 30.0


class MediaError(Exception):
    """An attachment that cannot be fetched or decoded; its message is shown to the model in words."""


@dataclass(frozen=True)
class Attachment:
    msgtype: str
    filename: str
    mimetype: str
    size: int | None  # as declared by the sender (info.size); None when not given
    url: str  # the mxc:// URI (of the ciphertext, for an encrypted file)
    encrypted: Mapping[str, Any] | None = None  # the EncryptedFile, when the room is encrypted


def caption_of(content: Mapping[str, Any]) -> str:
    """The caption (Matrix 1.10): `body` is one when `filename` is given and differs from it."""
    body = str(content.get("body", ""))
    filename = content.get("filename")
    return body if isinstance(filename, str) and filename and body != filename else ""


def parse_attachment(content: Mapping[str, Any]) -> Attachment | None:
    if content.get("msgtype") not in MEDIA_MSGTYPES:
        return None
    info = content.get("info") if isinstance(content.get("info"), Mapping) else {}
    encrypted = content.get("file") if isinstance(content.get("file"), Mapping) else None
    url = str((encrypted or content).get("url") or "")
    size = info.get("size")
    return Attachment(
        msgtype=str(content["msgtype"]),
        filename=str(content.get("filename") or content.get("body") or "attachment"),
        mimetype=str(info.get("mimetype") or "application/octet-stream"),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        url=url,
        encrypted=encrypted,
    )


def describe(att: Attachment) -> str:
    size = f", {att.size} bytes" if att.size is not None else ""
    return f"[attachment: {att.filename} ({att.mimetype}{size})]"


def transcript_text(caption: str, att: Attachment | None) -> str:
    """What the transcript keeps of a message: its text, and a description of its attachment."""
    if att is None:
        return caption
    return f"{caption}\n{describe(att)}" if caption else describe(att)


def for_model(att: Attachment) -> bool:
    return att.msgtype == "m.image" and att.mimetype in MODEL_IMAGE_TYPES


def image_parts(text: str, mimetype: str, data: bytes) -> list[dict[str, Any]]:
    url = f"data:{mimetype};base64,{base64.b64encode(data).decode('ascii')}"
    return [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]


def unsupported_note(att: Attachment, why: str | None = None) -> str:
    reason = why or f"{att.mimetype} ({att.msgtype}) cannot be passed on to the model"
    return (f"[the attachment {att.filename} was not given to you: {reason}; you only know its name, type and "
            "size. If it matters, say so to the user.]")


def too_large(att: Attachment, limit: int) -> bool:
    return att.size is not None and att.size > limit


def too_large_reply(att: Attachment, limit: int, size: int | None = None) -> str:
    shown = size if size is not None else att.size
    return (f"Sorry, I can't take the attachment {att.filename}: it is {shown} bytes, over my limit of "
            f"{limit} bytes.")


def parse_mxc(url: str) -> tuple[str, str]:
    if not url.startswith("mxc://"):
        raise MediaError(f"not an mxc:// URI: {url!r}")
    server, _, media_id = url.removeprefix("mxc://").partition("/")
    if not server or not media_id or "/" in media_id:
        raise MediaError(f"malformed mxc:// URI: {url!r}")
    return server, media_id


def download_url(homeserver: str, mxc: str, path: str = DOWNLOAD_PATH) -> str:
    server, media_id = parse_mxc(mxc)
    return f"{homeserver.rstrip('/')}{path}/{quote(server)}/{quote(media_id)}"


def decrypt(ciphertext: bytes, file: Mapping[str, Any]) -> bytes:
    from nio.crypto.attachments import decrypt_attachment

    try:
        return decrypt_attachment(ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"])
    except Exception as exc:  # nio raises EncryptionError, KeyError for a malformed EncryptedFile
        raise MediaError(f"cannot decrypt the attachment: {type(exc).__name__}: {exc}") from exc


async def fetch(homeserver: str, access_token: str, att: Attachment, limit: int | None,
                decrypt_encrypted: bool = True, via: list[str] | None = None, fallback: bool = True) -> bytes:
    """The attachment's bytes (decrypted), at most `limit` of them: a larger download raises MediaError. `via`
    collects which endpoint served it (`authenticated`, `legacy`)."""
    headers = {"Authorization": f"Bearer {access_token}"}
    timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)
    failed: list[str] = []
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for name, path in (("authenticated", DOWNLOAD_PATH), ("legacy", LEGACY_DOWNLOAD_PATH)):
            async with http.get(download_url(homeserver, att.url, path), headers=headers) as resp:
                if resp.status == 200:
                    data = await _read_capped(resp, limit)
                    if via is not None:
                        via.append(name)
                    break
                failed.append(f"HTTP {resp.status} ({name})")
                if not fallback or (resp.status not in FALLBACK_STATUSES and resp.status < 500):
                    raise MediaError("download failed: " + ", ".join(failed))
        else:
            raise MediaError("download failed: " + ", ".join(failed))
    return decrypt(data, att.encrypted) if att.encrypted is not None and decrypt_encrypted else data


async def _read_capped(resp: aiohttp.ClientResponse, limit: int | None) -> bytes:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if limit is not None and len(data) > limit:
            raise MediaError(f"larger than the limit of {limit} bytes")
    return bytes(data)


def download_failed_reply(att: Attachment, why: str) -> str:
    return f"Sorry, I could not download the attachment {att.filename} ({why}), so I cannot look at it."


Fetch = Callable[[Attachment], Awaitable[bytes]]


@dataclass(frozen=True)
class Prepared:
    """What a turn does with its message's attachment: content parts for the model, or a reply that refuses."""

    parts: list[dict[str, Any]] | None = None
    refusal: str | None = None
    outcome: str = "described"  # image | described | too-large | failed


async def prepare(caption: str, att: Attachment, fetcher: Fetch, limit: int | None, *,
                  crash_on_unknown: bool = False, forward_images: bool = True, failure_to_model: bool = False
                  ) -> Prepared:
    """What the turn does with the attachment. A download that fails is the bot's own reply (`failure_to_model`,
    a test-only mutation: the model is told instead, and answers as if nothing had gone wrong)."""
    text = caption or "(no caption)"
    if limit is not None and too_large(att, limit):
        return Prepared(refusal=too_large_reply(att, limit), outcome="too-large")
    if not for_model(att) or not forward_images:
        if crash_on_unknown and not for_model(att):
            raise RuntimeError(f"unhandled attachment type {att.mimetype}")  # the test-only mutation
        return Prepared(parts=[{"type": "text", "text": f"{text}\n{describe(att)}\n{unsupported_note(att)}"}])
    try:
        data = await fetcher(att)
    except MediaError as exc:
        if limit is not None and str(exc).startswith("larger than"):
            return Prepared(refusal=too_large_reply(att, limit, att.size), outcome="too-large")
        return _failed(text, att, str(exc), failure_to_model)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _failed(text, att, f"download failed: {type(exc).__name__}", failure_to_model)
    return Prepared(parts=image_parts(f"{text}\n{describe(att)}", att.mimetype, data), outcome="image")


def _failed(text: str, att: Attachment, why: str, to_model: bool) -> Prepared:
    if to_model:
        return Prepared(parts=[{"type": "text", "text": f"{text}\n{unsupported_note(att, why)}"}], outcome="failed")
    return Prepared(refusal=download_failed_reply(att, why), outcome="failed")
