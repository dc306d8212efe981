"""Attachments (qa.agent.media): parsing, what the model is given, size limits, mxc URLs, decryption."""

from __future__ import annotations

import base64

import pytest

from qa.agent import media
from qa.agent.media import Attachment, MediaError, caption_of, parse_attachment, prepare
from qa.agent.policy import MENTION_REQUIRED, NOT_TEXT, RoomPolicy, decide, parse_inbound
from qa.provider.rules import image_count, is_image_data_url

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 20


def image_content(**extra: object) -> dict[str, object]:
    return {"msgtype": "m.image", "body": "what is this?", "filename": "cat.png", "url": "mxc://hs/abc",
            "info": {"mimetype": "image/png", "size": 28}, **extra}


def test_caption_is_the_body_only_when_a_different_filename_is_given() -> None:
    assert caption_of(image_content()) == "what is this?"
    assert caption_of({"msgtype": "m.image", "body": "cat.png", "filename": "cat.png"}) == ""
    assert caption_of({"msgtype": "m.image", "body": "cat.png"}) == ""  # before Matrix 1.10: body is the name


def test_parse_attachment_plain_encrypted_and_not_media() -> None:
    att = parse_attachment(image_content())
    assert att == Attachment("m.image", "cat.png", "image/png", 28, "mxc://hs/abc")
    enc = parse_attachment({"msgtype": "m.file", "body": "x.pdf", "file": {"url": "mxc://hs/enc", "v": "v2"},
                            "info": {"size": True}})
    assert enc is not None and enc.url == "mxc://hs/enc" and enc.encrypted is not None
    assert enc.size is None and enc.mimetype == "application/octet-stream"
    assert parse_attachment({"msgtype": "m.text", "body": "hi"}) is None


def test_policy_accepts_media_but_keeps_the_mention_rule() -> None:
    event = {"event_id": "$1", "room_id": "!r", "sender": "@u:hs", "content": image_content(**{"m.mentions": {}})}
    inbound = parse_inbound(event, "@bot:hs")
    assert inbound.media is not None and inbound.body == "what is this?"
    assert decide(inbound, "@bot:hs", RoomPolicy(require_mention=True)).reason == MENTION_REQUIRED
    assert decide(inbound, "@bot:hs", RoomPolicy(require_mention=False)).accept
    odd = parse_inbound({**event, "content": {"msgtype": "m.location", "body": "here"}}, "@bot:hs")
    assert decide(odd, "@bot:hs", RoomPolicy(require_mention=False)).reason == NOT_TEXT


async def _fetch_png(_att: Attachment) -> bytes:
    return PNG


async def test_an_image_becomes_a_text_part_and_an_image_data_url() -> None:
    prepared = await prepare("what is this?", parse_attachment(image_content()), _fetch_png, 1000)
    assert prepared.outcome == "image" and prepared.refusal is None
    text, image = prepared.parts
    assert text == {"type": "text", "text": "what is this?\n[attachment: cat.png (image/png, 28 bytes)]"}
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert image_count([text, image]) == 1


async def test_other_types_are_described_in_words_without_a_download() -> None:
    async def never(_att: Attachment) -> bytes:
        raise AssertionError("a type the model cannot take is not downloaded")

    audio = parse_attachment({"msgtype": "m.audio", "body": "t.ogg", "url": "mxc://hs/a",
                              "info": {"mimetype": "audio/ogg", "size": 58}})
    prepared = await prepare("", audio, never, 1000)
    [part] = prepared.parts
    assert "(no caption)" in part["text"] and "audio/ogg (m.audio) cannot be passed on to the model" in part["text"]
    with pytest.raises(RuntimeError, match="unhandled attachment type audio/ogg"):
        await prepare("", audio, never, 1000, crash_on_unknown=True)


async def test_too_large_is_refused_before_downloading_and_when_the_download_runs_over() -> None:
    big = parse_attachment(image_content(info={"mimetype": "image/png", "size": 5000}))
    prepared = await prepare("hi", big, _fetch_png, 1000)
    assert prepared.outcome == "too-large" and prepared.parts is None
    assert prepared.refusal == ("Sorry, I can't take the attachment cat.png: it is 5000 bytes, over my limit of "
                                "1000 bytes.")
    assert (await prepare("hi", big, _fetch_png, None)).outcome == "image"  # no limit: the mutation's bug

    async def runs_over(_att: Attachment) -> bytes:
        raise MediaError("larger than the limit of 1000 bytes")

    undeclared = parse_attachment(image_content(info={"mimetype": "image/png"}))
    assert (await prepare("hi", undeclared, runs_over, 1000)).outcome == "too-large"


async def test_a_failed_download_is_told_to_the_person_not_raised() -> None:
    # Issue 27 changed who is told: one clear reply to the person, not a note only the model saw.
    async def broken(_att: Attachment) -> bytes:
        raise MediaError("download failed: HTTP 500 (authenticated), HTTP 500 (legacy)")

    att = parse_attachment(image_content())
    prepared = await prepare("hi", att, broken, 1000)
    assert prepared.outcome == "failed" and prepared.parts is None
    assert prepared.refusal == (f"Sorry, I could not download the attachment {att.filename} (download failed: "
                                "HTTP 500 (authenticated), HTTP 500 (legacy)), so I cannot look at it.")
    mutated = await prepare("hi", att, broken, 1000, failure_to_model=True)  # the old, silent way
    assert mutated.outcome == "failed" and "download failed: HTTP 500" in mutated.parts[0]["text"]


def test_download_urls_use_the_authenticated_endpoint_and_reject_bad_mxc() -> None:
    assert media.download_url("http://hs:8008/", "mxc://hs.example/ab_c") == \
        "http://hs:8008/_matrix/client/v1/media/download/hs.example/ab_c"
    for bad in ("http://hs/abc", "mxc://hs", "mxc:///abc", "mxc://hs/a/b"):
        with pytest.raises(MediaError):
            media.parse_mxc(bad)


def test_encrypted_attachments_round_trip_and_a_bad_hash_is_refused() -> None:
    from nio.crypto.attachments import encrypt_attachment

    ciphertext, keys = encrypt_attachment(PNG)
    assert media.decrypt(ciphertext, keys) == PNG
    with pytest.raises(MediaError, match="cannot decrypt"):
        media.decrypt(ciphertext[:-1] + b"x", keys)


def test_the_mock_counts_only_data_urls_that_really_are_images() -> None:
    png_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert is_image_data_url(png_url)
    assert not is_image_data_url("data:image/png;base64," + base64.b64encode(b"ciphertext" * 5).decode())
    assert not is_image_data_url("data:image/jpeg;base64," + base64.b64encode(PNG).decode())
    assert not is_image_data_url("https://example.org/cat.png")
    assert not is_image_data_url("data:image/png," + "%89PNG")
    assert image_count("text") == 0


@pytest.mark.parametrize(("authenticated", "legacy", "via", "error"), [
    (200, 200, ["authenticated"], None),
    (404, 200, ["legacy"], None),
    (500, 200, ["legacy"], None),
    (403, 200, [], "download failed: HTTP 403 (authenticated)"),
    (500, 500, [], "download failed: HTTP 500 (authenticated), HTTP 500 (legacy)"),
])
async def test_the_legacy_endpoint_is_the_fallback(authenticated: int, legacy: int, via: list[str],
                                                    error: str | None) -> None:
    from aiohttp import web

    asked: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        asked.append(request.path)
        status = authenticated if request.path.startswith(media.DOWNLOAD_PATH) else legacy
        return web.Response(status=status, body=b"PNG" if status == 200 else b"{}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    homeserver = f"http://127.0.0.1:{runner.addresses[0][1]}"
    att = parse_attachment(image_content())
    seen: list[str] = []
    try:
        if error is None:
            assert await media.fetch(homeserver, "tok", att, 1000, via=seen) == b"PNG"
        else:
            with pytest.raises(MediaError) as err:
                await media.fetch(homeserver, "tok", att, 1000, via=seen)
            assert str(err.value) == error
        if authenticated == 404:  # the test-only mutation: no fallback
            with pytest.raises(MediaError, match=r"^download failed: HTTP 404 \(authenticated\)$"):
                await media.fetch(homeserver, "tok", att, 1000, fallback=False)
    finally:
        await runner.cleanup()
    assert seen == via
    assert asked[0].startswith("/_matrix/client/v1/media/download/")
    assert all(p.startswith(("/_matrix/client/v1/media/download/", "/_matrix/media/v3/download/")) for p in asked)
