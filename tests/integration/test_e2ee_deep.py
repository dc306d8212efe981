"""E2EE beyond trust on first use, on a real Synapse with real Olm/Megolm (vodozemac) on both sides: SAS
verification, verified-only key sharing, Megolm rotation on membership changes, devices that come and go,
decrypted text kept out of the artifacts. Each scenario is then shown catching its bug: the embedded agent
with a test-only setting flipped must fail it, at the step that guards against that bug, with a readable
report. Runs are grouped (each boots Synapse; E2EE is heavy on two shared cores): one green run, two red.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.shared.markers import MarkerFactory
from tests.integration.conftest import MUTANT_STEP_CAP_S

pytestmark = pytest.mark.integration

DEEP = ("matrix-e2ee-sas-verification", "matrix-e2ee-verified-only", "matrix-e2ee-verification-notice-no-trigger",
        "matrix-e2ee-key-rotation-on-leave", "matrix-e2ee-late-joiner-history", "matrix-e2ee-new-device-gets-keys",
        "matrix-e2ee-bot-device-deleted-relogin", "matrix-e2ee-dm-reply", "matrix-e2ee-artifact-redaction",
        "matrix-e2ee-crypto-store-corrupt")


def _trace(run_dir: Path, scenario: str) -> list[dict]:
    path = run_dir / "scenarios" / scenario / "bot-trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_the_deeper_e2ee_scenarios_pass(run_qa) -> None:
    result = await run_qa(*DEEP)
    assert result.code == 0, result.report
    sas = _trace(result.dir, "matrix-e2ee-sas-verification")
    [shown] = [r for r in sas if r["type"] == "verification.sas"]
    assert len(shown["emoji"]) == 7 and len(shown["decimals"]) == 3, "the bot shows the SAS it compared"
    assert [r for r in sas if r["type"] == "verification.done"], "the bot traced the verification's outcome"
    withheld = [r for r in _trace(result.dir, "matrix-e2ee-verified-only") if r["type"] == "e2ee.withheld"]
    assert withheld and all(r["reason"] == "unverified" for r in withheld)
    relogin = [r for r in _trace(result.dir, "matrix-e2ee-bot-device-deleted-relogin") if r["type"] == "device.relogin"]
    assert relogin and relogin[0]["oldDeviceId"] != relogin[0]["deviceId"]
    store = _trace(result.dir, "matrix-e2ee-crypto-store-corrupt")
    kinds = {r["type"] for r in store}
    assert {"e2ee.store.corrupt", "e2ee.store.reset"} <= kinds
    assert [r for r in store if r.get("reason") == "undecryptable"], "what it could not decrypt is in the trace"
    # The test users start syncing once the rooms are made and joined (qa.actors.SETUP_SYNC_FILTER), and that first
    # sync still brings each room whole: every room's observed events begin at its m.room.create (key rotation's
    # room holds 11 events by then, more than a first sync's default timeline of 10).
    firsts: dict[tuple[str, str], str] = {}
    for event in json.loads((result.dir / "matrix-qa-observed-events.json").read_text()):
        firsts.setdefault((event["scenario"], event["room_id"]), event["type"])
    assert set(firsts.values()) == {"m.room.create"}, firsts
    # The run's whole output, the report and observed events included, holds no decrypted marker.
    markers = MarkerFactory(result.summary["runId"])
    texts = [markers["token"], markers["token2"]]
    for path in result.dir.rglob("*"):
        if path.is_file():
            data = path.read_text(encoding="utf-8", errors="replace")
            assert not [t for t in texts if t in data], f"{path} holds a decrypted marker"


MUTATIONS = {"keepMegolmSession": True, "logDecryptedBodies": True, "reloginOnDeviceDeleted": False,
             "resetCorruptCryptoStore": False, "roomKeys": "all", "answerVerificationNotices": True}
# scenario -> (failing step, words its expectation must carry, words its evidence must carry)
Caught = tuple[int | None, list[str], list[str]]
CAUGHT: dict[str, Caught] = {
    "matrix-e2ee-verified-only": (5, ["'first'"], ["driver.phone", "holds the room key"]),
    "matrix-e2ee-verification-notice-no-trigger": (3, ["dropped: verification"], ["the bot accepted 'request'"]),
    "matrix-e2ee-key-rotation-on-leave": (7, ["'after'"], ["did not start a new one", "member", "holds the room key"]),
    "matrix-e2ee-late-joiner-history": (7, ["'after'"], ["late", "lacks the room key"]),
    "matrix-e2ee-new-device-gets-keys": (6, ["'after'"], ["driver.phone", "lacks the room key"]),
    # A bot that never notices: its sync keeps failing on the dead token.
    "matrix-e2ee-bot-device-deleted-relogin": (3, ["log in as a new device"], ["Invalid access token"]),
    "matrix-e2ee-artifact-redaction": (3, ["no decrypted text in the run's artifacts"], ["bot.log: holds {token}"]),
    # A bot that dies on its damaged store never becomes ready again: the run says so, with its log's tail.
    "matrix-e2ee-crypto-store-corrupt": (None, ["scenario infrastructure works"], ["did not become ready",
                                                                                  "file is not a database"]),
}


async def test_each_scenario_catches_its_bug(run_qa) -> None:
    # The bot that never notices its deleted device: the wait for its new one is cut to MUTANT_STEP_CAP_S.
    result = await run_qa(*CAUGHT, bot_overrides=MUTATIONS, step_timeout_cap_s=MUTANT_STEP_CAP_S)
    assert result.code == 1
    wrong = []
    for scenario, (step, expected, seen) in CAUGHT.items():
        failure = result.scenario(scenario)["failure"] or {}
        text = "\n".join(failure.get("seen", []))
        if failure.get("step") != step or not all(e in failure.get("expected", "") for e in expected) \
                or not all(s in text for s in seen):
            wrong.append((scenario, failure))
    assert not wrong, wrong


async def test_a_bot_that_refuses_verification_or_bypasses_encryption_is_caught(run_qa) -> None:
    result = await run_qa("matrix-e2ee-sas-verification", "matrix-e2ee-dm-reply",
                          bot_overrides={"acceptVerification": False, "sendInTheClear": True})
    assert result.code == 1
    sas = result.scenario("matrix-e2ee-sas-verification")["failure"]
    assert sas["step"] == 2, sas
    assert "stalled waiting for the bot's m.key.verification.accept" in sas["expected"]
    assert "the bot cancelled: m.user" in sas["seen"][0] and "verification.refused" in "\n".join(sas["seen"])
    dm = result.scenario("matrix-e2ee-dm-reply")["failure"]
    assert dm["step"] == 2 and "the reply was sent in the clear" in dm["seen"], dm
