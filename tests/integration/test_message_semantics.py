"""Message-semantics scenarios on a real Synapse: edits, redactions, notices, reactions, threads, gating and
spoofing, reply formatting. Each passes on the embedded agent, and each is shown catching its bug: a test-only
mutation in the agent's config (`mutations.*`, qa.agent.config.MutationsConfig) or a flipped bot setting
makes it fail at the step that guards the behaviour, with a report that says what went wrong.

Scenarios are grouped so that one run (one Synapse) covers many: the mutations of a group do not touch the
other scenarios of that group.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import MUTANT_STEP_CAP_S, REPO, RunResult, run_in_process

pytestmark = pytest.mark.integration

SCENARIOS = [
    "matrix-inbound-edit-ignored", "matrix-inbound-edit-no-duplicate-trigger", "matrix-reaction-redaction-observed",
    "matrix-redaction-not-a-trigger", "matrix-notice-no-trigger", "matrix-reaction-not-a-reply",
    "matrix-reaction-threaded", "matrix-thread-root-preservation", "matrix-thread-nested-reply-shape",
    "matrix-thread-reply-override", "matrix-allowbots-all-unmentioned-open-room",
    "matrix-allowbots-mentions-unmentioned-open-room-block", "matrix-self-sender-ignored",
    "matrix-mention-spoof-block", "matrix-mxid-prefixed-command-block", "matrix-multi-actor-ordering",
    "matrix-formatted-reply", "matrix-long-reply-split",
    # Clients that are not like ours (issue 27): legacy and display-name mentions, hidden mentions, quotes, DMs.
    "matrix-mention-pill-without-m-mentions", "matrix-mention-display-name", "matrix-mention-metadata-only",
    "matrix-thread-explicit-quote", "matrix-dm-misclassified-group", "matrix-thread-preexisting",
    "matrix-bot-loop-guard",
]
# What the correct bot says about each message it must not answer, in step order.
NEGATIVE = {
    "matrix-inbound-edit-ignored": ["mention-required", "edit"],
    "matrix-inbound-edit-no-duplicate-trigger": ["edit"],
    "matrix-reaction-redaction-observed": ["redaction"],
    "matrix-redaction-not-a-trigger": ["redaction", "redaction"],
    "matrix-notice-no-trigger": ["notice"],
    "matrix-reaction-not-a-reply": ["recorded"],
    "matrix-allowbots-mentions-unmentioned-open-room-block": ["mention-required"],
    "matrix-self-sender-ignored": ["own-message"],
    "matrix-mention-spoof-block": ["mention-required"],
    "matrix-mxid-prefixed-command-block": ["mention-required", "sender-not-allowed"],
    "matrix-multi-actor-ordering": ["sender-not-allowed"] * 3,
    "matrix-mention-pill-without-m-mentions": ["mention-required"],
    "matrix-mention-display-name": ["mention-required"],
    "matrix-mention-metadata-only": ["mention-required"],
    "matrix-dm-misclassified-group": ["mention-required"] * 3,
    "matrix-allowbots-all-unmentioned-open-room": ["bot-sender-blocked"],
}

# Group 1: mutations (bot config overrides) and flipped scenario settings that leave each other's scenarios alone.
MUTATIONS_1 = {
    "mutations.reactOnEdits": True, "mutations.trustFormattedMentions": True, "mutations.mxidPrefixIsMention": True,
    "mutations.answerNotices": True, "mutations.answerReactions": True, "mutations.rawHtml": True,
    "mutations.truncateLongReplies": True, "mutations.redactionsAsMessages": True,
    "mutations.replyFallbackToRoot": True, "mutations.displayNameIsMention": True,
    # A stale m.direct entry trusted while two are joined: only the DM scenario's bot has an m.direct.
    "testMutations": ["m-direct-any-pair"],
}
FLIPPED = {
    "matrix-allowbots-all-unmentioned-open-room": {"allowBots": "mentions"},
    "matrix-allowbots-mentions-unmentioned-open-room-block": {"allowBots": "all"},
    "matrix-thread-reply-override": {"threadReplies": "inbound"},
    "matrix-multi-actor-ordering": {"allowlist": None},
}
# scenario -> (failing step, text the failure's evidence must show)
CAUGHT_1 = {
    "matrix-inbound-edit-ignored": (4, "the bot accepted 'edited'"),
    "matrix-inbound-edit-no-duplicate-trigger": (4, "the bot accepted 'edited'"),
    "matrix-mention-spoof-block": (2, "the bot accepted 'spoof'"),
    "matrix-mxid-prefixed-command-block": (2, "the bot accepted 'typed'"),
    "matrix-notice-no-trigger": (2, "the bot accepted 'notice'"),
    "matrix-reaction-not-a-reply": (4, "the bot accepted 'party'"),
    "matrix-formatted-reply": (2, "<script> is not a tag Matrix clients render"),
    "matrix-long-reply-split": (2, "the reply came as 1 part(s), expected at least 3"),
    "matrix-redaction-not-a-trigger": (4, "the bot accepted 'removed_ask'"),
    "matrix-thread-nested-reply-shape": (3, "m.in_reply_to"),
    "matrix-allowbots-all-unmentioned-open-room": (2, "the bot dropped it (mention-required)"),
    "matrix-allowbots-mentions-unmentioned-open-room-block": (2, "the bot accepted 'unmentioned'"),
    "matrix-thread-reply-override": (2, "expected rel_type m.thread"),
    "matrix-multi-actor-ordering": (8, "the bot accepted 'blocked1'"),
    "matrix-mention-display-name": (4, "the bot accepted 'name_only'"),
    # m.direct lists the room for alice, who left: two remain, the bot and the driver, and no DM between them.
    "matrix-dm-misclassified-group": (14, "the bot accepted 'stale'"),
}
# Group 2: mutations that would disturb group 1 (a bot answering itself loops in an open room; a bot answering
# reactions never records them, so their removal or thread could not be checked).
MUTATIONS_2 = {"mutations.answerOwnMessages": True, "mutations.ignoreRedactions": True,
               "mutations.reactionsToMainSession": True, "mutations.threadRootFromReply": True,
               # Not in group 1: there displayNameIsMention would count the legacy pill's visible name.
               "mutations.ignoreLegacyMentions": True, "mutations.visibleMentionRequired": True,
               # Not in group 3: two-members-is-dm would answer the thread's earlier messages, which then are context.
               # trust-m-direct: only the DM scenario's bot has an m.direct of its own.
               "testMutations": ["no-thread-history", "trust-m-direct"]}
CAUGHT_2 = {
    "matrix-self-sender-ignored": (3, "the bot accepted 'answer'"),
    "matrix-reaction-redaction-observed": (6, "the bot records the reaction's removal"),
    "matrix-reaction-threaded": (8, "does not carry 'reacted 👀 to message'"),
    # Synapse refuses a thread rooted at the bot's own threaded answer: the turn fails with the server's reason.
    "matrix-thread-root-preservation": (5, "Cannot start threads from an event with a relation"),
    "matrix-mention-pill-without-m-mentions": (2, "the bot dropped it (mention-required)"),
    "matrix-mention-metadata-only": (2, "the bot dropped it (mention-required)"),
    "matrix-thread-preexisting": (7, "does not carry"),
    # The bot's own m.direct lists a room of three for the driver: a bot that trusts it answers unmentioned.
    "matrix-dm-misclassified-group": (10, "the bot accepted 'crowded'"),
}
# Group 3: an explicit quote read as leaving the thread (group 1's replyFallbackToRoot and group 2's
# threadRootFromReply would break the same scenario earlier), and DMs guessed by head count (which would make
# every two-member room of the other groups a DM).
# Also: a bot that never consults knownBots (bots are people to it) passes allowBots all's positive case; the
# negative (allowBots off, same room) catches it. Group 1 flips that scenario to show its positive failing.
# And a bot whose blocked senders each hold its loop up ("does not delay", measured against a baseline reply).
# And no loop guard at all (botLoopLimit null): two bots that answer everything talk on and on.
MUTATIONS_3 = {"mutations.quoteLeavesThread": True, "testMutations": ["two-members-is-dm", "slow-on-blocked"],
               "mutations.knownBotsIgnored": True, "botLoopLimit": None}
CAUGHT_3 = {
    "matrix-thread-explicit-quote": (5, "expected rel_type m.thread, got m.relates_to=None"),
    "matrix-dm-misclassified-group": (5, "the bot accepted 'unmentioned'"),
    "matrix-allowbots-all-unmentioned-open-room": (5, "the bot accepted 'blocked'"),
    "matrix-multi-actor-ordering": (11, "more than the 2000 ms slack"),
    "matrix-bot-loop-guard": (2, "the bot answered 6 messages in a row from other_bot"),
}


def scenario_dir(tmp_path: Path, name: str, ids: list[str], flipped: dict[str, dict[str, Any]]) -> Path:
    """Copies of the library's scenarios, some with their `bot:` settings changed, alone in one directory."""
    root = tmp_path / name
    directory = root / "scenarios"
    directory.mkdir(parents=True)
    # Rule files are named relative to the repo root, which is the scenario folder's parent. A copy, not a
    # symlink: a path a scenario names must resolve inside its own library (issue 28's confinement).
    shutil.copytree(REPO / "fixtures", root / "fixtures")
    for scenario_id in ids:
        data = yaml.safe_load((REPO / "scenarios" / f"{scenario_id}.yaml").read_text(encoding="utf-8"))
        data["bot"] = {**(data.get("bot") or {}), **flipped.get(scenario_id, {})}
        (directory / f"{scenario_id}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return directory


async def run(tmp_path: Path, directory: Path, ids: list[str], overrides: dict[str, Any]) -> RunResult:
    """Every run here is a mutant's, expected to fail: a step the bug makes wait out (the removal of a reaction the
    bot never records) fails after MUTANT_STEP_CAP_S, at the same step (assert_caught)."""
    return await run_in_process(tmp_path / f"run-{directory.parent.name}", tmp_path / "console.log", scenario_ids=ids,
                                scenario_paths=[directory], bot_overrides=overrides,
                                step_timeout_cap_s=MUTANT_STEP_CAP_S)


def assert_caught(result: RunResult, caught: dict[str, tuple[int, str]]) -> None:
    assert result.code == 1
    report = result.report
    for scenario_id, (step, evidence) in caught.items():
        scenario = result.scenario(scenario_id)
        assert scenario["status"] == "fail", (scenario_id, scenario.get("details"))
        failure = scenario["failure"]
        assert failure["step"] == step, (scenario_id, failure)
        seen = "\n".join([failure.get("expected", ""), *failure["seen"]])
        assert evidence in seen, (scenario_id, failure)
        assert evidence in report, scenario_id


async def test_message_semantics_scenarios_pass_on_the_embedded_agent(run_qa) -> None:
    result = await run_qa(*SCENARIOS)
    assert result.code == 0, result.report
    for scenario_id in SCENARIOS:
        assert result.scenario(scenario_id)["status"] == "pass", scenario_id
    for scenario_id, reasons in NEGATIVE.items():
        checks = result.scenario(scenario_id)["negativeChecks"]
        assert [c["botReason"] for c in checks] == reasons, scenario_id
        assert all(c["method"] == "trace" and c["unwantedReplies"] == [] for c in checks), scenario_id
    # The reaction and its removal are both in the session transcript, as notices naming who and what.
    transcripts = result.dir / "scenarios" / "matrix-reaction-redaction-observed" / "transcripts"
    notices = [line for f in transcripts.glob("*.jsonl") for line in f.read_text().splitlines() if '"notice"' in line]
    assert len(notices) == 2 and "removed the reaction" in notices[1]


async def test_each_bug_is_caught_by_its_scenario(tmp_path: Path) -> None:
    ids = list(CAUGHT_1)
    result = await run(tmp_path, scenario_dir(tmp_path, "group-1", ids, FLIPPED), ids, MUTATIONS_1)
    assert_caught(result, CAUGHT_1)


async def test_self_answers_lost_reactions_and_wrong_thread_roots_are_caught(tmp_path: Path) -> None:
    ids = list(CAUGHT_2)
    result = await run(tmp_path, scenario_dir(tmp_path, "group-2", ids, {}), ids, MUTATIONS_2)
    assert_caught(result, CAUGHT_2)


async def test_explicit_quotes_read_as_top_level_and_dms_guessed_by_head_count_are_caught(tmp_path: Path) -> None:
    ids = list(CAUGHT_3)
    result = await run(tmp_path, scenario_dir(tmp_path, "group-3", ids, {}), ids, MUTATIONS_3)
    assert_caught(result, CAUGHT_3)
