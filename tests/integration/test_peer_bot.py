"""The peer bot (issue 27): a second bot process beside the bot under test. The embedded agent's loop guard against
the real independent nio bot (`--answer-all`, no guard of its own): the exchange stops within its bound and the
agent traces `bot-loop`; with the guard off (a test-only change of the agent's config) the scenario fails with
the count; and a peer that dies fails the scenario naming the peer and its log. Shared Synapse and fork server.
"""

from __future__ import annotations

import re
from pathlib import Path

from qa.shared.redact import scan_for_secrets
from tests.integration.conftest import REPO, RunResult

SCENARIO = "matrix-bot-loop-guard-peer"
PEER = REPO / "tests" / "bots" / "nio-reply-bot-peer.yaml"
MOST = 14  # the scenario's `max`
# The exchange counts as stopped after `quiet` without a message. One hop (a sync, a model call, a send) takes a
# fraction of a second on a quiet machine and seconds on a loaded one, where a pause of the library's 4 s between
# two hops would end the guarded exchange before the bot's 4th answer (`bot == 4` fails) and let the unguarded one
# stop short of the count: these two tests run a copy waiting 12 s of silence (the guarded run pays the 8 s more once;
# the unguarded one ends at the count).
QUIET = "12s"


def _patient(tmp_path: Path) -> Path:
    """The library scenario, alone in a directory, with a longer `quiet`: the same steps and bound otherwise."""
    text = (REPO / "scenarios" / f"{SCENARIO}.yaml").read_text(encoding="utf-8")
    assert text.count("quiet: 4s}") == 1, "the library scenario's quiet changed: look at QUIET again"
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / f"{SCENARIO}.yaml").write_text(text.replace("quiet: 4s}", f"quiet: {QUIET}}}"),
                                                            encoding="utf-8")
    return tmp_path / "scenarios"


def _no_secret_in_artifacts(result: RunResult) -> None:
    assert scan_for_secrets(result.dir, result.secrets) == []  # every secret of 8 characters or more


async def test_the_loop_guard_stops_an_exchange_with_the_independent_nio_bot(run_qa, tmp_path: Path) -> None:
    result = await run_qa(SCENARIO, peer_bot_file=PEER, scenario_paths=[_patient(tmp_path)])
    assert result.code == 0, result.report
    assert result.summary["environment"]["peerBot"]["name"] == "nio-reply-bot-peer"
    scenario = result.scenario(SCENARIO)
    steps = {s["index"]: s for s in scenario["steps"]}
    stopped = re.search(r"stopped after (\d+) messages \(bot (\d+), peer bot peer (\d+)\)", steps[2]["detail"])
    assert stopped, steps[2]
    total, bot, peer = map(int, stopped.groups())
    # The guard (botLoopLimit 3): the bot answers the person and 3 of the peer's messages, the peer answers all.
    assert total <= MOST and bot == 4 and peer >= bot, steps[2]
    assert "reason=bot-loop" in steps[3]["detail"] and "sender=@mqa-peer.bot-" in steps[3]["detail"]
    # The peer's answer to the person is not the bot's: the bot's own reply is the one paired.
    assert steps[5]["status"] == "pass" and steps[5]["method"] == "trace"
    log = result.dir / scenario["artifacts"]["peer-bot"]
    assert log.name == "peer-bot.log" and "answering" in log.read_text(encoding="utf-8")
    _no_secret_in_artifacts(result)


async def test_without_the_guard_the_scenario_fails_with_the_count(run_qa, tmp_path: Path) -> None:
    result = await run_qa(SCENARIO, peer_bot_file=PEER, bot_overrides={"botLoopLimit": None},
                          scenario_paths=[_patient(tmp_path)])
    assert result.code == 1
    failure = result.scenario(SCENARIO)["failure"]
    assert failure["step"] == 2 and failure["stepKind"] == "expect_exchange_stops", failure
    went_on = re.search(r"the bots sent (\d+) messages \(bot (\d+), peer bot peer (\d+)\) after the opener, more "
                        rf"than {MOST}: the exchange went on", failure["seen"][0])
    assert went_on and int(went_on.group(1)) > MOST and int(went_on.group(2)) > 4, failure
    assert "the exchange went on" in result.report


async def test_a_peer_that_dies_fails_the_scenario_naming_the_peer_and_its_log(run_qa, tmp_path: Path) -> None:
    dies = tmp_path / "peer-that-dies.yaml"
    dies.write_text('name: peer-that-dies\n'
                    'command: ["{python}", "-c", "import time; print(\'syncing as @p\', flush=True); '
                    'time.sleep(3); raise SystemExit(3)"]\n'
                    'ready: {log: "^syncing as @"}\n', encoding="utf-8")
    result = await run_qa(SCENARIO, peer_bot_file=dies)
    assert result.code == 1
    scenario = result.scenario(SCENARIO)
    seen = "\n".join([scenario["details"], *scenario["failure"]["seen"]])
    # Mid-step (`peer bot NAME: exited with code 3 unexpectedly (log: …)`), or, on a slow machine, before it was
    # ready (`peer bot NAME did not become ready: the bot exited with code 3 …; see …`): the peer, named, either way.
    assert "peer bot peer-that-dies" in seen and "exited with code 3" in seen, seen
    assert "peer-bot.log" in seen, seen
