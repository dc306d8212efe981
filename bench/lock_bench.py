"""Lock-timing benchmark: many turns with a 100 ms mock model, narrow scope beside the legacy attempt scope.

    python bench/lock_bench.py [--turns 50]
    python bench/lock_bench.py --compaction-only [--sizes 100,1000,10000]

Compaction line (in-process, no homeserver): the rewrite hold (acquire → read → write aside → fsync → rename →
release) against the transcript's size, with the default keepRecords 40; the summary's model call is outside
the hold by design, so it is not part of this number. Goal: under 100 ms at 10,000 records.

Prints per scope: lock hold per turn (p50, max), total overlap of holds with model I/O, and the contention
probe's acquire time while a model call is in flight. Goals (narrow): max hold <= 20 ms, overlap 0 ms,
probe acquire <= 5 ms. The attempt scope is the bug, shown for contrast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from cli_run import REPO, run_matrix_qa

from qa.agent.compaction import CompactionLimits, summary_content
from qa.agent.lock import SessionWriteLock
from qa.agent.transcript import Transcript
from qa.kernel.lock_settings import LockSettings
from qa.report.summary import percentile

RULES = REPO / "fixtures" / "mock-provider" / "bench-latency.yaml"


def scenario(turns: int) -> dict:
    steps: list[dict] = []
    for i in range(turns):
        send = {"as": "driver", "mention": "bot", "body": f"bench reply with marker: B{i}", "id": f"q{i}"}
        steps.append({"send": send})
        steps.append({"expect_reply": {"to": f"q{i}", "body": f"B{i}", "top_level": True}})
    return {"id": "bench-lock", "title": f"{turns} sequential turns", "profiles": ["bench"],
            "timeout": f"{max(120, turns * 3)}s", "steps": steps}


def run(scope: str, scenarios_dir: Path, out: Path) -> dict:
    # The attempt scope fails its lock verdict on purpose: its summary is the contrast, not an error.
    summary, _ = run_matrix_qa(["--scenarios-dir", str(scenarios_dir), "--no-builtin-scenarios", "--profile", "bench",
                                "--provider-rules", str(RULES), "--bot-set", f"session.writeLock.scope={scope}"],
                               out, must_pass=False)
    return summary


def report(scope: str, summary: dict) -> None:
    lock = summary["lock"]
    turns = [t for t in lock["turns"] if t.get("outcome") == "replied"]
    holds = [t["longestHoldMs"] for t in turns]
    acquired = [p["acquiredElapsedMs"] for p in lock["probes"] if p.get("acquiredElapsedMs") is not None]
    timed_out = [p for p in lock["probes"] if p.get("timeoutElapsedMs") is not None]
    in_flight = sum(1 for p in lock["probes"] if p.get("duringModelIo"))
    print(f"scope={scope}: {len(turns)} turns answered, run {summary['status']}, lock verdict {lock['verdict']}")
    if holds:
        print(f"  lock hold per turn     p50 {statistics.median(holds):8.2f} ms   max {max(holds):8.2f} ms")
    print(f"  overlap with model I/O total {lock['totalOverlapMs']:8.2f} ms")
    print(f"  probes                 {len(lock['probes'])} ({in_flight} while a model call was in flight)")
    if acquired:
        print(f"  probe acquire          p50 {statistics.median(acquired):8.2f} ms   max {max(acquired):8.2f} ms"
              f"   p95 {percentile(acquired, 95):8.2f} ms")
    if timed_out:
        print(f"  probe timeouts         {len(timed_out)}: {timed_out[0]['error'][:70]}…")


def compaction_hold_ms(records: int, directory: Path, repeats: int = 3) -> tuple[float, int]:
    """Median rewrite hold for a transcript of `records` user/assistant records (~120 bytes of content each).
    The summary content is built before the hold, as the agent does (qa.agent.post_turn)."""
    path = directory / f"bench-{records}.jsonl"
    limits = CompactionLimits(max_records=1, max_bytes=1 << 40, keep_records=40)
    lock = SessionWriteLock(path, LockSettings())
    holds = []
    for _ in range(repeats):
        lines = []
        for seq in range(1, records + 1):
            kind = "user" if seq % 2 else "assistant"
            lines.append(json.dumps({"seq": seq, "t": 0.0, "at": "", "attempt": f"t{(seq + 1) // 2}", "kind": kind,
                                     "eventId": f"$e{(seq + 1) // 2}", "content": "x" * 120}))
        path.write_text("\n".join(lines) + "\n")
        transcript = Transcript(path)
        prepared = transcript.prepare_compaction(limits)
        assert prepared is not None
        content = summary_content(prepared.plan.folded, "summary")
        started = time.perf_counter()
        with lock.acquire_sync("bench-compact", "compaction") as hold:
            assert transcript.compact(hold, prepared, content) is not None
        holds.append((time.perf_counter() - started) * 1000)
    return statistics.median(holds), len(prepared.plan.folded)


def compaction_report(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="mqa-compaction-bench-") as tmp:
        for size in sizes:
            hold, folded = compaction_hold_ms(size, Path(tmp))
            print(f"compaction: {size:6d} records (folded {folded:6d})  rewrite hold p50 {hold:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--compaction-only", action="store_true", help="only the compaction line (no homeserver)")
    parser.add_argument("--sizes", default="100,1000,10000", help="transcript sizes for the compaction line")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.compaction_only:
        compaction_report(sizes)
        return
    with tempfile.TemporaryDirectory(prefix="mqa-lock-bench-") as tmp:
        scenarios_dir = Path(tmp) / "scenarios"
        scenarios_dir.mkdir()
        (scenarios_dir / "bench-lock.yaml").write_text(yaml.safe_dump(scenario(args.turns), sort_keys=False))
        results = {scope: run(scope, scenarios_dir, Path(tmp) / scope) for scope in ("narrow", "attempt")}
    for scope, summary in results.items():
        report(scope, summary)
    narrow = results["narrow"]["lock"]
    holds = [t["longestHoldMs"] for t in narrow["turns"] if t.get("outcome") == "replied"]
    probes = [p["acquiredElapsedMs"] for p in narrow["probes"] if p.get("acquiredElapsedMs") is not None]
    print("goals (narrow): max hold <= 20 ms: {:.2f} ({:.2f}x); overlap 0 ms: {:.2f}; probe acquire <= 5 ms: {:.2f} "
          "({:.2f}x)".format(max(holds, default=0), max(holds, default=0) / 20, narrow["totalOverlapMs"],
                             max(probes, default=0), max(probes, default=0) / 5))
    compaction_report(sizes)


if __name__ == "__main__":
    main()
