"""What a second embedded Synapse costs to boot, alone (no scenarios): both forked from the early interpreter (hz29),
against the first forked and the second spawned the ordinary way (paying its whole import, as the second homeserver
did before). Paired: fork, spawn, fork, spawn ... Not a test: nothing asserted.

    python bench/second_synapse_boot.py [--pairs 5]

Per variant, medians: the CPU seconds of every process it started (getrusage of children, after all are stopped
and reaped: the zygote, its middle processes are the zygote's, both Synapses), the wall time until both answer, and
the sum of Pss (and of Rss) of both Synapses once both are ready.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qa import processes  # noqa: E402
from qa.homeserver import early_synapse  # noqa: E402
from qa.homeserver.synapse import SynapseHomeserver  # noqa: E402


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def _boot_two(fork_both: bool, tmp: Path) -> dict[str, float]:
    early = early_synapse.start(os.environ)
    assert early is not None and early_synapse.take() is early
    servers = [SynapseHomeserver(tmp / f"w{i}", tmp / f"l{i}") for i in (1, 2)]  # the database template, as a run
    servers[0].adopt_early(early)
    if fork_both:
        servers[1].adopt_early(early)
    began = time.perf_counter()
    try:
        await asyncio.gather(*(hs.start() for hs in servers))
        wall = time.perf_counter() - began
        await asyncio.sleep(1)  # settled
        pids = [hs.pid for hs in servers if hs.pid is not None]
        pss = sum(_kb(p, "Pss") for p in pids) / 1024
        rss = sum(_kb(p, "Rss") for p in pids) / 1024
    finally:
        await asyncio.gather(*(hs.stop() for hs in servers))
        early_synapse.discard()
    return {"wall_s": wall, "pss_mb": pss, "rss_mb": rss}


def _one(fork_both: bool) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="second-synapse-") as tmp:
        figures = asyncio.run(_boot_two(fork_both, Path(tmp)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    assert processes.become_subreaper()
    rows: dict[str, list[dict[str, float]]] = {"both forked": [], "second spawned": []}
    for i in range(args.pairs):
        for name, fork_both in (("both forked", True), ("second spawned", False)):
            figures = _one(fork_both)
            rows[name].append(figures)
            print(f"pair {i + 1} {name}: " + "  ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
    for name, runs in rows.items():
        print(f"{name:16s} " + "  ".join(f"{k} {statistics.median(r[k] for r in runs):.2f}" for k in runs[0]))
    for key in ("cpu_s", "pss_mb", "wall_s"):
        pairs = zip(rows["both forked"], rows["second spawned"], strict=True)
        print(f"forked/spawned {key}: " + ", ".join(f"{a[key] / b[key]:.3f}" for a, b in pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
