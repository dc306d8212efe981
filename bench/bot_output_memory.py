"""Memory of a run whose bot talks a lot: 200 MB of output and 100,000 trace records before its ready line.

    python bench/bot_output_memory.py [--mb 200] [--records 100000]

Runs `matrix-qa run` of bench/scenarios/bench-flood.yaml (the canary's steps, with time for the flood) twice from
a new process, with the independent nio test bot and with the same bot behind a flood (bench/bots/flood_bot.py),
and samples the harness process's peak resident memory (VmHWM in /proc/<pid>/status) while it runs. Prints both
peaks and their difference; the flooded run must still find the ready line after the flood and pass the scenario
on its evidence (exit 1 otherwise), and its peak must stay within BOUND_MB of the quiet run's (exit 1 otherwise):
the output is streamed to bot.log and the readiness wait, the in-memory log is capped, and the trace is read in
chunks. The trace records themselves are kept (evidence searches them), so they are what the bound pays for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "bench" / "scenarios"  # the canary's steps, with time for the flood before the ready line
BOUND_MB = 120.0  # over the quiet run's peak; measured +86 MiB (100,000 kept trace records, the capped log copy)
SAMPLE_S = 0.05  # VmHWM is a high-water mark: a late sample still sees an earlier peak


def peak_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    return int(line.split()[1]) if line else None


def run(bot: Path, out: Path, env: dict[str, str]) -> tuple[dict, float, float]:
    """(summary, peak MiB of the harness, wall s)."""
    began = time.perf_counter()
    argv = [sys.executable, "-m", "qa.cli", "run", "--scenarios-dir", str(SCENARIOS), "--scenario", "bench-flood",
            "--bot", str(bot), "--output-dir", str(out)]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, peak_kib(proc.pid) or 0)
        time.sleep(SAMPLE_S)  # sampling a high-water mark, not synchronising
    stderr = proc.stderr.read() if proc.stderr else ""
    summary_path = out / "matrix-qa-summary.json"
    if not summary_path.exists():
        sys.exit(f"no summary from the run with {bot.name} (exit {proc.returncode}):\n{stderr[-3000:]}")
    return json.loads(summary_path.read_text()), peak / 1024, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="megabytes of output before the ready line")
    parser.add_argument("--records", type=int, default=100_000, help="trace records before the ready line")
    args = parser.parse_args()
    env = {**os.environ, "FLOOD_MB": str(args.mb), "FLOOD_RECORDS": str(args.records),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="mqa-bench-memory-") as tmp:
        quiet, quiet_peak, quiet_wall = run(REPO / "tests" / "bots" / "nio-reply-bot.yaml", Path(tmp) / "quiet", env)
        loud, loud_peak, loud_wall = run(REPO / "bench" / "bots" / "flood-bot.yaml", Path(tmp) / "loud", env)
        log_mb = (Path(tmp) / "loud" / "scenarios" / "bench-flood" / "bot.log").stat().st_size / 2**20
    canary = loud["scenarios"][0]
    print(f"quiet bot: peak RSS of the harness {quiet_peak:.0f} MiB, run {quiet_wall:.1f} s, {quiet['status']}")
    print(f"flood bot ({args.mb} MB output, {args.records} trace records before ready): peak RSS {loud_peak:.0f} "
          f"MiB, run {loud_wall:.1f} s, bot.log {log_mb:.0f} MiB, scenario {canary['status']}: {canary['details']}")
    grew = loud_peak - quiet_peak
    print(f"difference: {grew:+.0f} MiB (bound: {BOUND_MB:.0f} MiB over the quiet run)")
    ok = loud["status"] == "pass" and quiet["status"] == "pass" and grew <= BOUND_MB
    if not ok:
        print("FAIL: " + ("over the memory bound" if grew > BOUND_MB else "the flooded run did not pass"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
