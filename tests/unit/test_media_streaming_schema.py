"""Scenario schema, capabilities and artifacts for the media and streaming steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.harness.capabilities import MEANING, missing, needs, skip_reason
from qa.report.writer import sanitize_event
from qa.scenario.loader import ScenarioErrors, load_scenarios
from qa.scenario.schema import KNOWN_PROFILES

REPO = Path(__file__).resolve().parents[2]
MEDIA_IDS = {"matrix-room-image-understanding-attachment", "matrix-media-type-coverage",
             "matrix-attachment-only-ignored", "matrix-unsupported-media-safe", "matrix-e2ee-media-image",
             "matrix-media-too-large"}
STREAMING_IDS = {"matrix-room-partial-streaming-preview", "matrix-room-quiet-streaming-preview",
                 "matrix-room-tool-progress-preview", "matrix-room-tool-progress-preview-opt-out",
                 "matrix-room-tool-progress-error", "matrix-room-tool-progress-mention-safety",
                 "matrix-streaming-lock-evidence"}


def _load(tmp_path: Path, steps: str, extra: str = "") -> object:
    (tmp_path / "scenarios").mkdir(exist_ok=True)
    media = tmp_path / "fixtures" / "media"
    media.mkdir(parents=True, exist_ok=True)
    (media / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    path = tmp_path / "scenarios" / "s.yaml"
    path.write_text(f"id: s\ntitle: t\nprofiles: [media]\n{extra}steps:\n{steps}", encoding="utf-8")
    return load_scenarios([path])[0]


def _errors(tmp_path: Path, steps: str, extra: str = "") -> str:
    with pytest.raises(ScenarioErrors) as info:
        _load(tmp_path, steps, extra)
    return info.value.format()


def test_the_contract_scenarios_exist_in_their_profiles() -> None:
    scenarios = {s.id: s for s in load_scenarios(REPO / "scenarios")}
    assert set(scenarios) >= MEDIA_IDS | STREAMING_IDS
    assert all("media" in scenarios[i].profiles for i in MEDIA_IDS)
    assert all("transport" in scenarios[i].profiles and "fast" not in scenarios[i].profiles for i in STREAMING_IDS)
    assert {"media", "transport"} <= set(KNOWN_PROFILES)
    assert all(needs(scenarios[i]) and "media" in {n.capability for n in needs(scenarios[i])} for i in MEDIA_IDS)
    assert all("streaming" in {n.capability for n in needs(scenarios[i])} for i in STREAMING_IDS)


def test_send_media_needs_media_and_a_foreign_bot_without_it_is_skipped(tmp_path: Path) -> None:
    s = _load(tmp_path, "  - send_media: {as: driver, media: image, fixture: pic.png, caption: hi, mention: bot, "
                        "id: a}\n  - expect_reply: {to: a, streamed: true, id: r}\n  - expect_edits: {to: r}\n")
    # A caption answered is a prompt only a model answers (qa.harness.capabilities.say_marker).
    assert [(n.capability, n.why) for n in needs(s)] == [("media", "step 1 (send_media)"),
                                                        ("streaming", "step 2 (expect_reply)"),
                                                        ("model", "step 2 (expect_reply): an answer to step 1, a "
                                                                  "prompt only a model answers (not say-able)")]
    line = skip_reason("echo", missing(s, ["trace", "model"]))
    assert line == "skipped: bot 'echo' lacks 'media' (step 1 (send_media)), 'streaming' (step 2 (expect_reply))"
    assert {"media", "streaming"} <= set(MEANING)


def test_bot_settings_imply_capabilities(tmp_path: Path) -> None:
    s = _load(tmp_path, "  - send: {as: driver, body: hi, id: a}\n",
              extra="bot: {streaming: quiet, toolProgress: off, mediaMaxBytes: 10}\n")
    assert [(n.capability, n.why) for n in needs(s)] == [("media", "bot.mediaMaxBytes"),
                                                        ("streaming", "bot.streaming")]
    assert s.bot.tool_progress == "off"  # YAML's bare off


def test_bad_send_media_and_expect_edits_are_exact_errors(tmp_path: Path) -> None:
    text = _errors(tmp_path, "  - send_media: {as: driver, media: image, fixture: nope.png, id: a}\n")
    assert "s.yaml:5:" in text and "no media fixture 'nope.png'" in text and "known: pic.png" in text
    text = _errors(tmp_path, "  - send_media: {as: driver, media: image, fixture: pic.png, generate_bytes: 3}\n")
    assert "exactly one of `fixture`" in text
    text = _errors(tmp_path, "  - send_media: {as: driver, media: image, fixture: pic.png, mention: bot}\n")
    assert "a mention lives in the caption" in text
    text = _errors(tmp_path, "  - send_media: {as: driver, media: gif, fixture: pic.png}\n")
    assert "steps[0].send_media.media" in text
    text = _errors(tmp_path, "  - send_media: {as: driver, media: file, fixture: ../etc/passwd}\n")
    assert "steps[0].send_media.fixture" in text
    text = _errors(tmp_path, "  - send: {as: driver, body: hi, id: a}\n  - expect_edits: {to: a}\n")
    assert "'a' is a sent message; this field needs an observed reply" in text
    text = _errors(tmp_path, "  - send: {as: driver, body: hi, id: a}\n  - expect_reply: {to: a, id: r}\n"
                             "  - expect_edits: {to: r, min: 3, max: 2}\n")
    assert "max (2) is below min (3)" in text
    text = _errors(tmp_path, "  - send: {as: driver, body: hi, id: a}\n  - expect_model_request: {to: a}\n")
    assert "needs `contains`, `excludes` and/or `images`" in text


def test_observed_events_keep_no_caption_name_url_or_attachment_key() -> None:
    event = {"type": "m.room.message", "event_id": "$1", "content": {
        "msgtype": "m.image", "body": "secret caption", "filename": "holiday.png", "m.mentions": {},
        "info": {"mimetype": "image/png", "size": 87},
        "file": {"url": "mxc://hs/x", "key": {"k": "KEYBYTES"}, "iv": "IV", "hashes": {"sha256": "H"}, "v": "v2"}}}
    quiet = sanitize_event(event)
    assert quiet["content"] == {"msgtype": "m.image", "m.mentions": {}, "bodyLength": 14}
    full = sanitize_event(event, include_bodies=True)
    assert full["content"]["body"] == "secret caption"
    assert full["content"]["file"] == {"url": "mxc://hs/x", "v": "v2"}
    assert event["content"]["file"]["key"] == {"k": "KEYBYTES"}  # the caller's event is untouched
