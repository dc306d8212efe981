"""bench/pss_breakdown.py: each process of a run is counted under the kind it is (a wrong kind would put a peak's
megabytes on the wrong process and send the search for them the wrong way)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("pss_breakdown", REPO / "bench" / "pss_breakdown.py")
assert _spec is not None and _spec.loader is not None
pb = importlib.util.module_from_spec(_spec)
sys.modules["pss_breakdown"] = pb  # its dataclasses look their module up there
_spec.loader.exec_module(pb)

PY = "/usr/bin/python3"
SEEDED = f"{PY} -m qa.homeserver.seeded_boot synapse.app.homeserver --await-config"
ZYGOTE = f"{PY} -m qa.harness.zygote 5 --serve qa.agent --await-orders --preload qa.agent.__main__"


def _kinds(*procs: tuple[int, int, str, str] | tuple[int, int, str, str, str]) -> dict[int, str]:
    seen = {p[0]: pb.Seen(*p) for p in procs}
    return {pid: pb.kind_of(proc, 1, seen) for pid, proc in seen.items()}


def test_each_kind_of_a_forked_run() -> None:
    kinds = _kinds(
        (1, 0, f"{PY} -m qa.cli run", "pipe:[9]"),
        (2, 1, SEEDED, "/dev/null"),  # the zygote: its answers on fd 9, fd 1 is /dev/null
        (3, 2, SEEDED, "/dev/null"),  # a middle process, between its two forks
        (4, 1, SEEDED, "/out/homeserver-1/synapse.stdout.log"),  # a forked Synapse, handed to the harness
        (5, 1, ZYGOTE, "/out/fork-server.log"),
        (6, 5, ZYGOTE, "/out/s1/bot.log"),
        (7, 5, ZYGOTE, "pipe:[12]", "/out/s1/lock-probe.log"),  # answers on a pipe, logs to its file
        (8, 5, ZYGOTE, "/out/s1/bot-mutations.log"),
        (9, 1, "sh -c true", "/dev/null"),
    )
    assert kinds == {1: "harness", 2: "synapse-zygote", 3: "synapse-zygote", 4: "synapse", 5: "fork-server",
                     6: "bot", 7: "lock-probe", 8: "state-tool", 9: "other"}


def test_spawned_processes_by_their_command_line() -> None:
    kinds = _kinds(
        (1, 0, f"{PY} -m qa.cli run", ""),
        (2, 1, f"{PY} -m qa.homeserver.seeded_boot synapse.app.homeserver -c hs.yaml", "/o/synapse.stdout.log"),
        (3, 1, f"{PY} -m synapse.app.homeserver -c hs.yaml", "/o/synapse.stdout.log"),
        (4, 1, f"{PY} -m qa.agent --config c.json", "/o/bot.log"),
        (5, 1, f"{PY} -m qa.agent.lock_probe /state", "/o/lock-probe.log"),
        (6, 1, f"{PY} -m qa.agent.state_tools rewind-sync /state", "/o/bot-mutations.log"),
        (7, 1, f"{PY} -m qa.agent.zygote 5", "/o/fork-server.log"),  # the fork server's old name (92c3be8)
        (8, 7, f"{PY} -m qa.agent.zygote 5", "/o/bot.log"),
    )
    assert kinds == {1: "harness", 2: "synapse", 3: "synapse", 4: "bot", 5: "lock-probe", 6: "state-tool",
                     7: "fork-server", 8: "bot"}


def test_the_kinds_of_one_instant_add_up_to_its_total() -> None:
    now = pb.Instant(pss_kb={"harness": 100, "bot": 30}, private_kb={}, count={})
    assert now.total_kb == 130


def test_one_more_process_costs_its_own_peak_private_dirty_median_over_runs() -> None:
    """`one dirty`: per kind, the median over every process of that kind (all runs) of its own peak private dirty;
    a process counted under another kind is not in it, and a kind with none is 0."""
    first = pb.Follower(1, kinds={2: "bot", 3: "bot", 4: "lock-probe"}, own_dirty_kb={2: 100, 3: 300, 4: 7})
    second = pb.Follower(1, kinds={5: "bot", 6: "harness"}, own_dirty_kb={5: 200, 6: 9000})
    assert pb.one_dirty_kb("bot", [first, second]) == 200
    assert pb.one_dirty_kb("lock-probe", [first, second]) == 7
    assert pb.one_dirty_kb("synapse", [first, second]) == 0.0
