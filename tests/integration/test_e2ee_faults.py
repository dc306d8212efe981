"""E2EE the way real clients make it hard: a room key that arrives after its message (held back by the fault
proxy), a sender that rotates its Megolm session mid-conversation, and a bot killed right after a new Olm
session. One run passes all three; one run shows each failing on the embedded agent's test-only mutation of the
behaviour it guards (they leave each other's scenario alone)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

E2EE = ("matrix-e2ee-sender-rotates-session", "matrix-e2ee-crypto-store-hard-kill", "matrix-e2ee-late-room-key")


async def test_session_rotation_and_a_hard_kill_pass(run_qa) -> None:
    result = await run_qa(*E2EE)
    assert result.code == 0, result.report
    late = result.scenario("matrix-e2ee-late-room-key")
    actions = [(h["rule"], h["action"]) for h in late["faultHits"]]
    assert ("room-key-late", "hold-to-device") in actions and ("room-key-late", "release-to-device") in actions


async def test_each_fails_on_its_mutation(run_qa) -> None:
    result = await run_qa(*E2EE, bot_overrides={"testMutations": ["first-megolm-session-only",
                                                                  "crypto-store-per-process", "no-late-decrypt"]})
    assert result.code == 1, result.report
    failures = {s["id"]: s["failure"] for s in result.summary["scenarios"]}
    # A bot that pinned the first session: the second message (under the new one) is never answered.
    pinned = failures["matrix-e2ee-sender-rotates-session"]
    assert (pinned["stepKind"], pinned["step"]) == ("expect_reply", 5), pinned
    assert "undecryptable" in "\n".join(pinned["seen"]), pinned
    # The keys died with the process: after the restart nothing from the helper is answered.
    lost = failures["matrix-e2ee-crypto-store-hard-kill"]
    assert lost["stepKind"] == "expect_reply" and lost["step"] >= 6, lost
    # A bot that gives up on a message whose key is late: it never waits for the key.
    early = failures["matrix-e2ee-late-room-key"]
    assert (early["stepKind"], early["step"]) == ("expect_trace", 7), early
