"""Merging shard summaries (pure rules, and `matrix-qa report --merge` on files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qa.cli import main
from qa.kernel.errors import ConfigError
from qa.report.markdown import render_markdown
from qa.report.merge import MergeInput, artifact_prefix, merge_lock, merge_summaries
from qa.report.summary import (
    Environment,
    HomeserverInfo,
    ProviderInfo,
    RunError,
    ScenarioResult,
    ShardInfo,
    Status,
    Summary,
    Timings,
    count,
    latency_stats,
)
from qa.report.writer import SUMMARY_FILE, load_summary, write_reports


def result(scenario_id: str, status: Status = "pass", *, boot: float = 600.0, latencies: tuple[float, ...] = (),
           ms: float = 1000.0) -> ScenarioResult:
    return ScenarioResult(id=scenario_id, title=scenario_id.title(), status=status, durationMs=ms,
                          details=f"{status} details", source=f"/ci/{scenario_id}.yaml", botBootMs=boot,
                          replyLatenciesMs=list(latencies), latency=latency_stats(latencies),
                          artifacts={"bot": f"scenarios/{scenario_id}/bot.log"})


def lock(verdict: str = "pass", *, turns: int = 1, longest: float = 1.0, overlap: float = 0.0) -> dict[str, Any]:
    return {"verdict": verdict, "reasons": [f"{verdict} reason"] if verdict != "pass" else [], "turnCount": turns,
            "otherHolds": 0, "modelRequests": turns, "longestHoldMs": longest, "totalOverlapMs": overlap,
            "takeovers": 0, "lockTimeouts": 0, "probes": [{"session": f"s{turns}"}],
            "turns": [{"session": f"s{turns}", "attempt": f"a{i}"} for i in range(turns)], "scope": "narrow",
            "settings": {"acquireTimeoutMs": 10000}, "sources": {}}


def summary(run_id: str, results: list[ScenarioResult], *, shard: tuple[int, int] | None = None,
            total: float = 5000.0, lock_section: dict[str, Any] | None = None,
            errors: list[RunError] | None = None) -> Summary:
    counts = count(results)
    return Summary(
        runId=run_id, status="fail" if counts.failed else "pass", exitCode=1 if counts.failed else 0,
        startedAt=f"2025-01-01T12:00:0{run_id[-1]}Z", finishedAt=f"2025-01-01T12:01:0{run_id[-1]}Z",
        environment=Environment(homeserver=HomeserverInfo(kind="synapse", version="1.0"),
                                provider=ProviderInfo(mode="mock", model="mock-model"), profile="fast",
                                python="3.11", platform="linux", matrixQaVersion="0.1"),
        counts=counts, timings=Timings(homeserverBootMs=900.0 + total / 100, totalMs=total, scenariosMs=total - 1000,
                                       forkServerWaitMs=total / 100),
        scenarios=results, lock=lock_section if lock_section is not None else lock(), errors=errors or [],
        jobs=2, shard=ShardInfo(index=shard[0], count=shard[1]) if shard else None,
    )


def shards(canary2: Status = "pass") -> list[MergeInput]:
    return [
        MergeInput(summary("run-1", [result("canary", latencies=(50.0,)), result("matrix-c", latencies=(70.0,))],
                           shard=(1, 3), total=4000.0), source="s1/" + SUMMARY_FILE, artifact_prefix="s1"),
        MergeInput(summary("run-2", [result("canary", canary2), result("matrix-a", "skip" if canary2 == "fail"
                                                                                  else "pass", latencies=(60.0,))],
                           shard=(2, 3), total=6000.0, lock_section=lock(turns=2, longest=3.0)),
                   source="s2/" + SUMMARY_FILE, artifact_prefix="s2"),
        MergeInput(summary("run-3", [result("canary", boot=700.0), result("matrix-b", latencies=(80.0, 90.0))],
                           shard=(3, 3), total=5000.0), source="s3/" + SUMMARY_FILE, artifact_prefix="s3"),
    ]


def test_three_shards_make_one_run_with_one_canary_in_plan_order() -> None:
    merged = merge_summaries(list(reversed(shards())), run_id="merged-x", command=["matrix-qa", "report"])
    assert [(r.id, r.status) for r in merged.scenarios] == [
        ("canary", "pass"), ("matrix-a", "pass"), ("matrix-b", "pass"), ("matrix-c", "pass")]
    assert "ran 3 times: shard 1/3 pass, shard 2/3 pass, shard 3/3 pass" in merged.scenarios[0].details
    assert (merged.counts.total, merged.counts.passed) == (4, 4)
    assert (merged.status, merged.exitCode, merged.shard) == ("pass", 0, None)
    assert [(m.runId, m.shard.index if m.shard else None) for m in merged.mergedFrom or []] == [
        ("run-1", 1), ("run-2", 2), ("run-3", 3)]
    assert merged.environment.homeserver.kind == "synapse" and merged.command == ["matrix-qa", "report"]
    assert (merged.startedAt, merged.finishedAt) == ("2025-01-01T12:00:01Z", "2025-01-01T12:01:03Z")


def test_a_canary_that_failed_in_any_shard_is_the_one_kept() -> None:
    merged = merge_summaries(shards(canary2="fail"), run_id="m")
    canary = merged.scenarios[0]
    assert canary.status == "fail" and canary.details.startswith("fail details")
    assert [r.status for r in merged.scenarios] == ["fail", "skip", "pass", "pass"]
    assert (merged.status, merged.exitCode, merged.counts.failed) == ("fail", 1, 1)


def test_timings_are_the_longest_shards_and_latency_is_recomputed() -> None:
    merged = merge_summaries(shards(), run_id="m")
    assert merged.timings.totalMs == 6000.0 and merged.timings.scenariosMs == 5000.0
    assert merged.timings.homeserverBootMs == 960.0 and merged.timings.forkServerWaitMs == 60.0
    assert merged.timings.botBootMs == 600.0  # median of the four kept results
    assert merged.timings.note and "side by side" in merged.timings.note
    assert merged.latency is not None
    assert (merged.latency.count, merged.latency.p50Ms, merged.latency.p95Ms) == (5, 70.0, 90.0)
    assert merged.jobs == 2


def test_scenario_artifacts_point_into_their_shard_directory() -> None:
    merged = merge_summaries(shards(), run_id="m")
    by_id = {r.id: r for r in merged.scenarios}
    assert by_id["matrix-b"].artifacts == {"bot": "s3/scenarios/matrix-b/bot.log"}
    assert by_id["canary"].artifacts == {"bot": "s1/scenarios/canary/bot.log"}


def test_lock_evidence_adds_up_and_fails_if_any_shard_failed() -> None:
    merged = merge_lock([lock(turns=1, longest=2.0), None, lock("fail", turns=2, longest=5.0, overlap=3.5)])
    assert merged is not None
    assert merged["verdict"] == "fail" and merged["reasons"] == ["fail reason"]
    assert (merged["turnCount"], merged["modelRequests"], len(merged["turns"]), len(merged["probes"])) == (3, 3, 3, 2)
    assert (merged["longestHoldMs"], merged["totalOverlapMs"], merged["scope"]) == (5.0, 3.5, "narrow")
    passed = merge_lock([lock(), lock("none", turns=0)])
    assert passed is not None and passed["verdict"] == "pass" and passed["reasons"] == []
    assert merge_lock([None, None]) is None


def test_a_failed_lock_verdict_fails_the_merged_run() -> None:
    parts = shards()
    parts[2].summary.lock = lock("fail")
    merged = merge_summaries(parts, run_id="m")
    assert (merged.status, merged.exitCode) == ("fail", 1)


def test_errors_are_kept_and_name_their_shard() -> None:
    parts = shards()
    parts[1].summary.errors = [RunError(component="homeserver", message="synapse died")]
    merged = merge_summaries(parts, run_id="m")
    assert [e.message for e in merged.errors] == ["[shard 2/3] synapse died"]
    assert (merged.status, merged.exitCode) == ("error", 2)


@pytest.mark.parametrize("pick, problem", [
    ([0, 1], "shard(s) 3/3 missing"),
    ([0, 1, 2, 0], "the same run is given more than once"),
])
def test_an_incomplete_or_repeated_set_of_shards_is_refused(pick: list[int], problem: str) -> None:
    parts = shards()
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        merge_summaries([parts[i] for i in pick], run_id="m")


def test_shards_of_different_splits_or_unsharded_runs_are_refused() -> None:
    parts = shards()
    parts[2].summary.shard = ShardInfo(index=3, count=4)
    with pytest.raises(ConfigError, match="different splits"):
        merge_summaries(parts, run_id="m")
    parts[2].summary.shard = None
    with pytest.raises(ConfigError, match="unsharded"):
        merge_summaries(parts, run_id="m")
    parts[2].summary.shard = ShardInfo(index=2, count=3)
    with pytest.raises(ConfigError, match=r"shard\(s\) 2/3 given more than once"):
        merge_summaries(parts, run_id="m")


def test_unsharded_runs_merge_too() -> None:
    a = summary("run-1", [result("canary"), result("matrix-a")])
    b = summary("run-2", [result("matrix-b", "fail")])
    merged = merge_summaries([MergeInput(a), MergeInput(b)], run_id="m")
    assert [(r.id, r.status) for r in merged.scenarios] == [("canary", "pass"), ("matrix-a", "pass"),
                                                             ("matrix-b", "fail")]
    assert merged.exitCode == 1


def test_artifact_prefix_is_relative_and_forward_slashed(tmp_path: Path) -> None:
    assert artifact_prefix(tmp_path / "shards" / "s1", tmp_path / "merged") == "../shards/s1"
    assert artifact_prefix(tmp_path, tmp_path) is None


def test_report_merge_writes_one_summary_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = []
    for part in shards():
        d = tmp_path / "download" / (part.artifact_prefix or "x")
        write_reports(part.summary, d)
        dirs.append(d)
    out = tmp_path / "merged"
    # A directory or the summary file itself both name a run.
    code = main(["report", "--merge", str(dirs[0]), str(dirs[1] / SUMMARY_FILE), str(dirs[2]),
                 "--output-dir", str(out)])
    assert code == 0
    merged = load_summary(out / SUMMARY_FILE)
    assert [r.id for r in merged.scenarios] == ["canary", "matrix-a", "matrix-b", "matrix-c"]
    assert merged.scenarios[2].artifacts["bot"] == "../download/s3/scenarios/matrix-b/bot.log"
    assert merged.runId.startswith("merged-") and merged.command[:3] == ["matrix-qa", "report", "--merge"]
    report = (out / "matrix-qa-report.md").read_text()
    assert "| Merged from | 3 summaries: run-1 (shard 1/3, pass)" in report
    assert "longest run's" in report
    assert (out / "junit.xml").exists()
    assert "PASS: 4 passed" in capsys.readouterr().out


def test_report_merge_exits_with_the_merged_status(tmp_path: Path) -> None:
    for part in shards(canary2="fail"):
        write_reports(part.summary, tmp_path / (part.artifact_prefix or "x"))
    assert main(["report", "--merge", *(str(tmp_path / f"s{i}") for i in (1, 2, 3)),
                 "--output-dir", str(tmp_path / "m")]) == 1
    # A missing shard is a usage error, and nothing is written.
    assert main(["report", "--merge", str(tmp_path / "s1"), str(tmp_path / "s2"),
                 "--output-dir", str(tmp_path / "m2")]) == 2
    assert not (tmp_path / "m2").exists()


def test_report_needs_a_summary_or_merge(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 2
    assert "--merge" in capsys.readouterr().err


def test_summaries_without_the_new_fields_still_load_and_render(tmp_path: Path) -> None:
    data = summary("run-1", [result("canary", latencies=(40.0, 80.0))]).to_json_dict()
    for key in ("latency", "jobs", "shard", "mergedFrom"):
        data.pop(key)
    for scenario in data["scenarios"]:
        scenario.pop("latency")
    data["timings"].pop("note")
    path = tmp_path / SUMMARY_FILE
    path.write_text(json.dumps(data))
    old = load_summary(path)
    md = render_markdown(old)
    assert "Reply latency over 2 replies: p50 40.0 ms · p95 80.0 ms" in md
    assert "| 40.0 ms / 80.0 ms |" in md


def test_an_interrupted_shard_keeps_the_merged_run_interrupted_with_its_exit_code() -> None:
    parts = shards()
    cut = parts[1].summary.model_copy(update={
        "status": "interrupted", "exitCode": 143,
        "scenarios": [result("canary"), result("b", "interrupted")]})
    parts[1] = MergeInput(cut, source="shard-2", artifact_prefix=parts[1].artifact_prefix)
    merged = merge_summaries(parts, run_id="merged-x")
    assert merged.status == "interrupted" and merged.exitCode == 143
    assert merged.counts.interrupted == 1
    kept = next(r for r in merged.scenarios if r.id == "b")
    assert kept.status == "interrupted"


def test_a_merge_of_runs_where_nothing_ran_is_not_a_pass() -> None:
    only_skips = [MergeInput(summary("r1", [result("canary", "skip"), result("a", "skip")]), source="s1")]
    merged = merge_summaries(only_skips, run_id="merged-y")
    assert merged.status == "error" and merged.exitCode == 2


def test_report_merge_of_a_directory_of_runs_merges_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The pytest plugin under xdist writes DIR/gw0, DIR/gw1, ...: `--merge DIR` takes them all, in name order.
    for part in shards():
        write_reports(part.summary, tmp_path / "report" / f"gw{part.artifact_prefix}")
    assert main(["report", "--merge", str(tmp_path / "report"), "--output-dir", str(tmp_path / "m")]) == 0
    merged = load_summary(tmp_path / "m" / SUMMARY_FILE)
    assert [m.runId for m in merged.mergedFrom] == ["run-1", "run-2", "run-3"]
    assert "(merged from 3)" in capsys.readouterr().out
    # A directory with neither a summary nor runs under it is named as the missing summary it is.
    (tmp_path / "empty").mkdir()
    assert main(["report", "--merge", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "m2")]) == 2
    assert str(tmp_path / "empty" / SUMMARY_FILE) in capsys.readouterr().err
