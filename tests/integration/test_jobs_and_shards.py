"""Concurrency must not cost correctness: --jobs and --shard against a real Synapse, mock provider and bots.

Eleven of the fast profile's scenarios (every kind it has, below) run once one at a time (the reference) and once
at --jobs 4; seven of them run in 3 shards that are then merged. The reference run is shared by the tests of this
module.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.harness.plan import Shard, longest_first
from qa.library import builtin_estimates
from qa.shared.canary import CANARY
from tests.integration.conftest import REPO, RunResult, borrowing, cli, our_processes, run_in_process
from tests.integration.shared_fork_server import SessionForkServers
from tests.integration.shared_synapse import SessionSynapse

pytestmark = pytest.mark.integration

BROKEN = REPO / "fixtures/mock-provider/broken-marker.yaml"
# Runs with BROKEN fail on the wrong marker in the embedded agent's first (unstreamed) reply: --reply-edit-wait 0
# fails it at once instead of after the step's 30 s wait for an edit, with the same failure.


# What the shards split: the canary and six of the fast profile's scenarios, two a shard (the split and the
# merge are the same whatever the scenarios do; the fast profile whole ran in 19 scenario runs, this in 9). The
# unsharded run they must equal is the reference's run of these same scenarios (each scenario runs alone, in
# fresh rooms, whatever else the run holds).
SHARDED = [CANARY, "matrix-allowlist-block", "matrix-mention-gating", "matrix-reaction-notification",
           "matrix-thread-follow-up", "matrix-thread-isolation", "matrix-top-level-reply-shape"]

# What runs side by side: the shards' seven and one scenario of each kind of the fast profile's that they lack (an
# exec approval with its exec dir, an encrypted direct message with the bot's crypto store and m.direct, a bot
# restart, the session lock under contention). What sharing could break is the same for two scenarios of a kind as
# for one (each has its own users, rooms, bot, state dir, markers and provider scope), so the kinds' second
# scenarios (allowbots twice, the chunked approval, two more encrypted rooms) are left out. The --jobs 4 run is made
# once, against the reference: a second identical run went down the same path again (every check below is of what
# one run did), and the suite's many in-process runs already follow one another in each worker's process and on its
# Synapse. 22 side-by-side scenario runs in this module where there were 33 (48 before the kinds were cut).
SIDE_BY_SIDE = [*SHARDED, "matrix-approval-exec-metadata-single-event", "matrix-e2ee-dm-reply",
                "matrix-restart-resume", "matrix-session-lock-contention"]


def _run(out_dir: Path, **options: Any) -> RunResult:
    """A real run in-process, on its own event loop (so a module-scoped fixture can share one)."""
    return asyncio.run(run_in_process(out_dir, out_dir.parent / f"{out_dir.name}.console.log", **options))


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory, session_synapse: SessionSynapse,
                  session_fork_servers: SessionForkServers) -> RunResult:
    """The reference: the fast profile, one scenario at a time (on the session's Synapse and fork server, like
    the tests)."""
    own_forks = os.environ.get("MATRIX_QA_TESTS_OWN_FORK_SERVER") == "1"  # as the autouse fixture (conftest)
    with borrowing(session_synapse, None if own_forks else session_fork_servers):
        return _run(tmp_path_factory.mktemp("jobs1") / "run", jobs=1, scenario_ids=list(SIDE_BY_SIDE))


def outcome(summary: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [(s["id"], s["status"], [step["status"] for step in s["steps"]]) for s in summary["scenarios"]]


def bot_lifetimes(run: RunResult) -> dict[str, tuple[float, float]]:
    """Per scenario, from its bot's trace (the machine's monotonic clock): first start → last stop."""
    spans = {}
    for trace in (run.dir / "scenarios").glob("*/bot-trace.jsonl"):
        records = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
        times = [float(r["t"]) for r in records if r.get("type") in ("start", "stop")]
        spans[trace.parent.name] = (min(times), max(times))
    return spans


def test_jobs_4_gives_the_results_of_jobs_1(one_at_a_time: RunResult, tmp_path: Path) -> None:
    reference = one_at_a_time
    assert reference.code == 0, reference.report
    assert reference.summary["jobs"] == 1
    run = _run(tmp_path / "jobs4", jobs=4, scenario_ids=list(SIDE_BY_SIDE))
    assert run.code == 0, run.report
    # Same scenarios, same order (the plan's, not the finishing order), same outcome of every step.
    assert outcome(run.summary) == outcome(reference.summary)
    assert run.summary["counts"] == reference.summary["counts"]
    assert run.summary["lock"]["verdict"] == reference.summary["lock"]["verdict"] == "pass"
    assert [len(s["replyLatenciesMs"]) for s in run.summary["scenarios"]] == \
        [len(s["replyLatenciesMs"]) for s in reference.summary["scenarios"]]
    assert run.summary["jobs"] == 4 and run.summary["latency"]["count"] >= len(run.summary["scenarios"]) - 4

    spans = bot_lifetimes(run)
    canary_end = spans.pop(CANARY)[1]
    # The canary is the gate: no other scenario's bot started before the canary's had stopped.
    assert all(start > canary_end for start, _ in spans.values())
    # And the rest really ran side by side: some two bots were alive at the same time.
    ordered = sorted(spans.values())
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))
    # Progress lines of concurrent scenarios say whose they are.
    log = (run.dir / "matrix-qa-output.log").read_text()
    assert "[matrix-thread-follow-up] ✔ matrix-thread-follow-up pass" in log
    assert our_processes(str(tmp_path)) == []


def test_three_shards_merged_equal_the_unsharded_run(one_at_a_time: RunResult, tmp_path: Path) -> None:
    unsharded = [s for s in one_at_a_time.summary["scenarios"] if s["id"] in SHARDED]
    assert len(unsharded) == len(SHARDED)
    shard_dirs = []
    seen: list[str] = []
    per_shard: list[list[str]] = []
    for index in (1, 2, 3):
        run = _run(tmp_path / f"shard{index}", shard=Shard(index, 3), scenario_ids=list(SHARDED))
        assert run.code == 0, run.report
        assert run.summary["shard"] == {"index": index, "count": 3}
        ids = [s["id"] for s in run.summary["scenarios"]]
        assert ids[0] == CANARY
        seen += ids[1:]
        per_shard.append(ids[1:])
        shard_dirs.append(run.dir)
    # Every scenario ran in exactly one shard (the canary in each).
    assert sorted(seen) == sorted(s["id"] for s in unsharded if s["id"] != CANARY)
    assert all(len(ids) == 2 for ids in per_shard), per_shard  # every shard had work besides its canary

    merged_dir = tmp_path / "merged"
    proc = cli("report", "--merge", *map(str, shard_dirs), "--output-dir", str(merged_dir))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    merged = json.loads((merged_dir / "matrix-qa-summary.json").read_text())
    assert [(s["id"], s["status"]) for s in merged["scenarios"]] == [(s["id"], s["status"]) for s in unsharded]
    assert merged["counts"] == {**one_at_a_time.summary["counts"], "total": len(SHARDED), "passed": len(SHARDED)}
    assert one_at_a_time.summary["counts"]["passed"] == one_at_a_time.summary["counts"]["total"]
    assert merged["status"] == "pass" and merged["lock"]["verdict"] == "pass"
    assert [m["shard"]["index"] for m in merged["mergedFrom"]] == [1, 2, 3]
    assert "Merged from" in (merged_dir / "matrix-qa-report.md").read_text()


def test_a_failed_canary_stops_a_concurrent_run_before_anything_else_starts(tmp_path: Path) -> None:
    result = _run(tmp_path / "run", scenario_ids=[CANARY, "matrix-thread-follow-up", "matrix-mention-gating"],
                  jobs=2, provider_rules=[BROKEN], reply_edit_wait_s=0)
    assert result.code == 1
    assert [(s["id"], s["status"]) for s in result.summary["scenarios"]] == [
        (CANARY, "fail"), ("matrix-mention-gating", "skip"), ("matrix-thread-follow-up", "skip")]
    assert any("not-the-marker" in line for line in result.scenario(CANARY)["failure"]["seen"])
    assert not (result.dir / "scenarios" / "matrix-thread-follow-up").exists()


def test_fail_fast_starts_nothing_new_after_a_failure(tmp_path: Path) -> None:
    # No canary: both workers start at once, both scenarios fail (the model answers the wrong marker), and
    # neither worker starts the two left. The two started are the longest expected (the start order under --jobs).
    plan = ["matrix-reaction-notification", "matrix-thread-follow-up", "matrix-thread-isolation",
            "matrix-top-level-reply-shape"]  # plan order: by file name
    started = {s.id for s in longest_first([SimpleNamespace(id=i) for i in plan], builtin_estimates())[:2]}
    result = _run(tmp_path / "run", scenario_ids=list(reversed(plan)), jobs=2, fail_fast=True,
                  provider_rules=[BROKEN], reply_edit_wait_s=0)
    assert result.code == 1
    assert [(s["id"], s["status"]) for s in result.summary["scenarios"]] == [
        (i, "fail" if i in started else "skip") for i in plan]
    # Each failed on the wrong marker (the reason, not only the status).
    assert all(any("not-the-marker" in line for line in s["failure"]["seen"])
               for s in result.summary["scenarios"] if s["status"] == "fail")
    skipped = [s for s in result.summary["scenarios"] if s["status"] == "skip"]
    assert all("--fail-fast" in s["details"] for s in skipped)


# Short scenarios of the fast profile besides the canary: four, so that the four slots' first picks are two on each
# homeserver (the slots are dealt round robin, qa.harness.jobs.slot_homeservers).
ON_TWO = [CANARY, "matrix-allowlist-block", "matrix-mention-gating", "matrix-top-level-reply-shape",
          "matrix-reaction-notification"]


@pytest.mark.own_homeserver
def test_two_homeservers_both_serve_and_nothing_outlives_the_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.run import Run

    start_components = Run.start_components

    async def all_ready_first(self: Run, work: Path) -> None:
        # The one sync point of this test: scenarios start once every homeserver is ready (a run does not wait
        # for the second before the canary), so the first picks of the four slots are two on each, whatever the
        # machine's load makes of the second's boot.
        await start_components(self, work)
        await asyncio.gather(*self.homeserver_boots)

    monkeypatch.setattr(Run, "start_components", all_ready_first)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the work dirs, so their processes can be found below
    run = _run(tmp_path / "run", jobs=4, homeservers=2, scenario_ids=list(ON_TWO))
    assert run.code == 0, run.report
    homeservers = run.summary["homeservers"]
    assert [h["index"] for h in homeservers] == [1, 2]
    assert [h["log"] for h in homeservers] == ["homeserver/synapse.log", "homeserver-2/synapse.log"]
    assert all(h["bootMs"] > 0 and h["scenarios"] > 0 for h in homeservers), homeservers
    assert homeservers[0]["baseUrl"] != homeservers[1]["baseUrl"]
    on = {s["id"]: s["homeserver"] for s in run.summary["scenarios"]}
    assert on[CANARY] == 1 and set(on.values()) == {1, 2}, on
    assert sum(h["scenarios"] for h in homeservers) == len(ON_TWO)
    # Each scenario's bot account lived on the homeserver the summary names, and only there: its log has it.
    logs = [(run.dir / h["log"]).read_text(encoding="utf-8", errors="replace") for h in homeservers]
    for sid, index in on.items():
        bot = f"@mqa-bot-{sid}-"  # its localpart (qa.scenario.runner._localpart): these ids are short
        assert [bot in log for log in logs] == [index == 1, index == 2], sid
    assert "Homeservers | 2 side by side" in run.report
    assert our_processes(str(tmp_path)) == []
    assert not list(tmp_path.glob("matrix-qa-*")), "the work dirs (both homeservers' secrets) are gone"


def _second_cannot_boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every homeserver but the first fails its boot as a Synapse that exits at once does (an InfraError naming
    its log), and `auto` makes two of any plan: what a plan of 12 scenarios would, on a run of two."""
    import qa.run
    from qa.kernel.errors import InfraError

    made: list[Any] = []
    create = qa.run.create_homeserver

    def creating(*args: Any, **kwargs: Any) -> Any:
        hs = create(*args, **kwargs)
        if made:
            async def fails() -> None:
                raise InfraError(f"Synapse failed to start (exit code 1); see {hs.log_path}")

            hs.start = fails
        made.append(hs)
        return hs

    monkeypatch.setattr(qa.run, "create_homeserver", creating)
    monkeypatch.setattr(qa.run, "homeserver_count", lambda requested, **_: requested or 2)
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.mark.own_homeserver
def test_under_auto_a_second_homeserver_that_cannot_boot_is_a_note_not_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _second_cannot_boot(monkeypatch, tmp_path)
    run = _run(tmp_path / "run", jobs=2, scenario_ids=[CANARY, "matrix-mention-gating"])
    assert run.code == 0, run.report
    note = "note: homeserver 2 of 2 failed to boot, so the run goes on without it (--homeservers auto"
    assert note in (tmp_path / "run.console.log").read_text(encoding="utf-8")
    assert note in (run.dir / "harness.log").read_text(encoding="utf-8")
    assert "homeserver-2/synapse.log" in (run.dir / "harness.log").read_text(encoding="utf-8")
    assert run.summary["homeserversAsked"] == "auto"
    first, second = run.summary["homeservers"]
    assert first["scenarios"] == 2 and second["scenarios"] == 0 and second["bootMs"] is None
    assert second["notBooted"].startswith("homeserver 2 of 2: Synapse failed to start"), second
    assert {s["homeserver"] for s in run.summary["scenarios"]} == {1}
    assert our_processes(str(tmp_path)) == []


@pytest.mark.own_homeserver
def test_under_an_explicit_count_a_homeserver_that_cannot_boot_ends_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _second_cannot_boot(monkeypatch, tmp_path)
    run = _run(tmp_path / "run", jobs=2, homeservers=2, scenario_ids=[CANARY, "matrix-mention-gating"])
    assert run.code == 2, run.report
    assert run.summary["homeserversAsked"] == 2
    assert any("homeserver 2 of 2: Synapse failed to start" in e["message"] for e in run.summary["errors"]), \
        run.summary["errors"]
    assert our_processes(str(tmp_path)) == []
