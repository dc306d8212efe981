"""Issue 13's transport scenarios on a real Synapse: DMs, invites and kicks, several rooms and per-room overrides,
a config reload without a restart, and a stale sync position.

One run passes all of them; three more runs show each one catching the bug it guards against — a bot setting
flipped in a copy of the scenario, or one of the embedded agent's test-only mutations (qa/agent/config.py) —
with a failure at the step that guards it and a report that says what went wrong. Runs are grouped so that the
mutations sharing a run cannot touch each other's scenarios (each run boots Synapse).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import REPO, RunResult, run_in_process

pytestmark = pytest.mark.integration

TRANSPORT = [
    "matrix-dm-reply-shape", "matrix-dm-own-session", "matrix-allowbots-mentions-dm-unmentioned",
    "matrix-room-autojoin-invite", "matrix-autojoin-allowlist-block", "matrix-room-membership-loss",
    "matrix-secondary-room-reply", "matrix-secondary-room-open-trigger", "matrix-allowbots-room-override",
    "matrix-allowlist-hot-reload", "matrix-stale-sync-replay-dedupe", "matrix-initial-catchup-then-incremental",
    "matrix-post-restart-room-continue",
]


def _copy(directory: Path, scenario_id: str, change: Any) -> None:
    data = yaml.safe_load((REPO / "scenarios" / f"{scenario_id}.yaml").read_text(encoding="utf-8"))
    change(data)
    (directory / f"{scenario_id}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


async def _run(tmp_path: Path, name: str, ids: list[str], directory: Path | None = None, **options: Any
               ) -> RunResult:
    paths = [directory] if directory else [REPO / "scenarios"]
    return await run_in_process(tmp_path / name, tmp_path / f"{name}.log", scenario_ids=ids, scenario_paths=paths,
                                **options)


def _trace(result: RunResult, scenario_id: str) -> list[dict[str, Any]]:
    path = result.dir / "scenarios" / scenario_id / "bot-trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _failed_at(result: RunResult, scenario_id: str, step: int, kind: str, *fragments: str) -> dict[str, Any]:
    scenario = result.scenario(scenario_id)
    assert scenario["status"] == "fail", (scenario_id, scenario["details"])
    failure = scenario["failure"]
    assert (failure["step"], failure["stepKind"]) == (step, kind), (scenario_id, failure)
    text = "\n".join([failure["expected"], *failure["seen"]])
    for fragment in fragments:
        assert fragment in text, (scenario_id, fragment, text)
    assert failure["expected"] in result.report
    return failure


async def test_transport_scenarios_pass_on_the_embedded_agent(tmp_path: Path) -> None:
    result = await _run(tmp_path, "pass", TRANSPORT)
    assert result.code == 0, [(s["id"], s["details"]) for s in result.summary["scenarios"] if s["status"] != "pass"]
    # The DM was recognised from its invite (is_direct), the fresh room joined by autoJoin, the stranger's declined.
    dm = [r for r in _trace(result, "matrix-dm-reply-shape") if r["type"] == "invite"]
    assert [(r["direct"], r["decision"]) for r in dm] == [(True, "joined")]
    declined = [r for r in _trace(result, "matrix-autojoin-allowlist-block") if r["type"] == "invite"]
    assert {(r["decision"], r["reason"]) for r in declined} >= {("declined", "inviter-not-allowed"),
                                                                 ("joined", "inviter-allowed")}
    # Kicked: traced with who and why; the message of the gap came on rejoining and was taken for history.
    loss = _trace(result, "matrix-room-membership-loss")
    assert any(r["type"] == "membership" and r["membership"] == "leave" for r in loss)
    assert [c["botReason"] for c in result.scenario("matrix-room-membership-loss")["negativeChecks"]] == ["history"]
    # Reloaded, not restarted: one process start, and the trace names the new generation.
    reload = _trace(result, "matrix-allowlist-hot-reload")
    assert [r["type"] for r in reload].count("start") == 1
    assert [(r["generation"], r["ok"]) for r in reload if r["type"] == "config.reload"] == [(2, True)]
    # The rewound position really made the homeserver hand the answered messages over again.
    stale = _trace(result, "matrix-stale-sync-replay-dedupe")
    assert sum(1 for r in stale if r["type"] == "inbound" and r["reason"] == "duplicate") >= 2


async def test_agent_mutations_fail_the_scenarios_that_guard_them(tmp_path: Path) -> None:
    """Four bugs in one run; none of them touches another's scenario."""
    ids = ["matrix-stale-sync-replay-dedupe", "matrix-allowlist-hot-reload", "matrix-room-membership-loss",
           "matrix-dm-own-session"]
    result = await _run(tmp_path, "agent-mutations", ids, bot_overrides={
        "trustSyncPosition": True, "staleReloadPolicy": True, "answerBacklogOnJoin": True, "crossRoomMemory": True})
    assert result.code == 1
    _failed_at(result, "matrix-stale-sync-replay-dedupe", 11, "expect_trace", "inbound", "duplicate",
               "decision=accepted")
    _failed_at(result, "matrix-allowlist-hot-reload", 5, "expect_no_reply", "sender-not-allowed",
               "unwanted reply:")
    _failed_at(result, "matrix-room-membership-loss", 10, "expect_no_reply", "history", "unwanted reply:")
    _failed_at(result, "matrix-dm-own-session", 5, "expect_model_request", "which it must not")


async def test_catch_up_and_room_mutations_fail_their_scenarios(tmp_path: Path) -> None:
    ids = ["matrix-initial-catchup-then-incremental", "matrix-secondary-room-reply"]
    result = await _run(tmp_path, "catchup-mutations", ids,
                        bot_overrides={"catchupAsHistory": True, "replyInFirstRoom": True})
    assert result.code == 1
    _failed_at(result, "matrix-initial-catchup-then-incremental", 6, "expect_reply", "reply to step 'missed_top'")
    _failed_at(result, "matrix-secondary-room-reply", 2, "expect_reply", "the reply is in room")


async def test_flipped_scenario_settings_fail_the_scenarios_that_guard_them(tmp_path: Path) -> None:
    """Copies of the scenarios with one bot setting flipped, and the agent forgetting its state on restart."""
    directory = tmp_path / "flipped-scenarios"
    directory.mkdir()

    def bot(**changes: Any) -> Any:
        return lambda data: data.setdefault("bot", {}).update(changes)

    def drop_room_overrides(data: dict[str, Any]) -> None:
        for spec in data["rooms"].values():
            spec.pop("bot", None)

    flips = {
        "matrix-dm-reply-shape": bot(dmRequireMention=True),
        "matrix-allowbots-mentions-dm-unmentioned": bot(allowBots="all"),
        "matrix-room-autojoin-invite": bot(autoJoin="off"),
        "matrix-autojoin-allowlist-block": bot(autoJoin="always"),
        "matrix-secondary-room-open-trigger": bot(requireMention=False),
        "matrix-allowbots-room-override": drop_room_overrides,
        "matrix-post-restart-room-continue": lambda data: None,  # the agent's forgetStateOnStart does it
    }
    for scenario_id, change in flips.items():
        _copy(directory, scenario_id, change)
    result = await _run(tmp_path, "flipped", list(flips), directory, bot_overrides={"forgetStateOnStart": True})
    assert result.code == 1
    _failed_at(result, "matrix-dm-reply-shape", 2, "expect_reply", "the bot dropped it (mention-required)")
    _failed_at(result, "matrix-allowbots-mentions-dm-unmentioned", 2, "expect_no_reply", "unwanted reply:")
    _failed_at(result, "matrix-room-autojoin-invite", 2, "expect_membership", "reached 'leave' instead")
    _failed_at(result, "matrix-autojoin-allowlist-block", 2, "expect_membership", "reached 'join' instead")
    _failed_at(result, "matrix-secondary-room-open-trigger", 4, "expect_no_reply", "unwanted reply:")
    _failed_at(result, "matrix-allowbots-room-override", 2, "expect_no_reply", "bot-sender-blocked",
               "unwanted reply:")
    _failed_at(result, "matrix-post-restart-room-continue", 12, "expect_reply_count", "2 replies")
