"""Media scenarios on a real Synapse: attachments reach the model (images as image parts, the rest in words),
an encrypted image is decrypted, and each scenario fails on the bug it guards against (a test-only agent
setting, `testMutations`). Scenarios are grouped per run because each run boots Synapse."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

MEDIA = [
    "matrix-room-image-understanding-attachment",
    "matrix-media-type-coverage",
    "matrix-attachment-only-ignored",
    "matrix-unsupported-media-safe",
    "matrix-e2ee-media-image",
    "matrix-media-too-large",
    "matrix-media-download-fails",
]


def _failure(result, scenario_id: str) -> tuple[dict, str]:
    scenario = result.scenario(scenario_id)
    assert scenario["status"] == "fail", (scenario_id, scenario.get("steps"))
    failure = scenario["failure"]
    return failure, "\n".join([failure["expected"], *failure["seen"]])


async def test_media_scenarios_pass_and_no_artifact_holds_media(run_qa) -> None:
    result = await run_qa(*MEDIA)
    assert result.code == 0, result.report
    assert all(result.scenario(s)["status"] == "pass" for s in MEDIA)
    journal = json.loads((result.dir / "provider-journal.json").read_text())
    entries = journal if isinstance(journal, list) else journal["entries"]
    images = [e for e in entries if e.get("images")]
    # Image understanding, type coverage's image, the encrypted image and the one the legacy endpoint served:
    # four requests carried one image (the download that failed on both endpoints reached no model).
    assert len(images) == 4 and all(e["images"] == 1 for e in images)
    trace = (result.dir / "scenarios/matrix-media-download-fails/bot-trace.jsonl").read_text()
    fetched = [json.loads(line) for line in trace.splitlines() if '"media.fetch.end"' in line]
    assert [(r["outcome"], r.get("via")) for r in fetched] == [("image", "legacy"), ("failed", None)]
    journal_text = json.dumps(journal)
    assert "data:image/png;base64,<" in journal_text and "iVBORw0KGgo" not in journal_text  # PNG bytes' base64
    events = (result.dir / "matrix-qa-observed-events.json").read_text()
    assert "m.image" in events and "reply with only this exact marker" not in events and "pixel.png" not in events
    assert "mxc://" not in events  # not bytes, but the way to them: left out with the bodies


async def test_media_bugs_forwarding_mention_and_size_are_caught(run_qa) -> None:
    ids = ["matrix-room-image-understanding-attachment", "matrix-attachment-only-ignored", "matrix-media-too-large"]
    mutations = ["image-not-forwarded", "attachment-bypasses-mention", "no-media-size-limit"]
    result = await run_qa(*ids, bot_overrides={"testMutations": mutations})
    assert result.code == 1
    failure, text = _failure(result, "matrix-room-image-understanding-attachment")
    assert failure["stepKind"] == "expect_model_request" and "carries 0 image content part(s), expected 1" in text
    failure, text = _failure(result, "matrix-attachment-only-ignored")
    assert failure["stepKind"] == "expect_no_reply" and "the bot accepted 'bare'" in text
    failure, text = _failure(result, "matrix-media-too-large")
    assert failure["stepKind"] == "expect_reply" and "does not contain 'over my limit of 100000 bytes'" in text


async def test_media_bugs_crash_and_undecrypted_attachment_are_caught(run_qa) -> None:
    ids = ["matrix-media-type-coverage", "matrix-unsupported-media-safe", "matrix-e2ee-media-image",
           "matrix-media-download-fails"]
    result = await run_qa(*ids, bot_overrides={"testMutations": ["crash-on-unknown-media",
                                                                  "encrypted-media-not-decrypted",
                                                                  "no-legacy-media-fallback"]},
                          # The download failure's notice is a wrong body the agent (not streaming in any of
                          # these) never edits: fail it at once, not after the step's 30 s wait for an edit.
                          reply_edit_wait_s=0)
    assert result.code == 1
    for scenario_id in ("matrix-media-type-coverage", "matrix-unsupported-media-safe"):
        failure, text = _failure(result, scenario_id)
        assert failure["stepKind"] == "expect_reply" and "the bot's turn for it failed" in text, text
        assert "unhandled attachment type" in text
    # The type coverage failed at the audio clip, after the image had been answered.
    assert _failure(result, "matrix-media-type-coverage")[0]["step"] == 4
    failure, text = _failure(result, "matrix-e2ee-media-image")
    assert failure["stepKind"] == "expect_model_request" and "carries 0 image content part(s)" in text
    # No legacy fallback: the authenticated endpoint's 404 ends the download, and the bot says it failed.
    failure, text = _failure(result, "matrix-media-download-fails")
    assert (failure["stepKind"], failure["step"]) == ("expect_reply", 2), failure
    assert "could not download the attachment pixel.png (download failed: HTTP 404 (authenticated))" in text
