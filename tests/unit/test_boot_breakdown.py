"""bench/boot_pairs.py's breakdown: each component of a boot is the difference of the right two timestamps, and
Synapse's time is the bot's own first /sync and join."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from qa.harness.bot_process import TraceFollower, describe_record
from qa.waiting import Stream

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("boot_pairs", REPO / "bench" / "boot_pairs.py")
assert _spec is not None and _spec.loader is not None
bp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bp)

BOT = "@mqa-bot-s:localhost"


def _phase(wall: float, cpu: float, queue: float) -> dict[str, float]:
    return {"wallMs": wall, "cpuMs": cpu, "queueMs": queue, "ioMs": wall - cpu - queue}


def _run(tmp_path: Path) -> Path:
    # Distinct gaps, so a component taken from the wrong pair of timestamps cannot pass.
    (tmp_path / "scenarios" / "s").mkdir(parents=True)
    (tmp_path / "homeserver").mkdir()
    summary = {"scenarios": [{"id": "s", "botBootMs": 300.0, "botBootMarks": {
        "t": 1000.0, "spawnedMs": 8.0, "readyReadMs": 290.0, "seenMs": 300.0}}]}
    (tmp_path / "matrix-qa-summary.json").write_text(json.dumps(summary))
    boot = {"beforeStart": {"cpuMs": 5.0, "queueMs": 3.0},
            "phases": {"setup": _phase(16.0, 4.0, 2.0), "sync": _phase(128.0, 32.0, 64.0),
                       "ready": _phase(1.0, 1.0, 0.0)}}
    records = [{"t": 1030.0, "type": "start"}, {"t": 1200.0, "type": "invite"},
               {"t": 1258.0, "type": "ready", "userId": BOT, "boot": boot}]
    (tmp_path / "scenarios" / "s" / "bot-trace.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    line = ("2026 - synapse.access.http.1 - INFO - GET-1 - 127.0.0.1 - 1 - {%s} Processed request: %ssec/0.000sec "
            "ru=(%ssec, %ssec) db=(0.002sec/0.002sec/19) 1023B 200 \"%s %s HTTP/1.1\" \"Python\" [0 dbevts]")
    log = [line % ("@other:localhost", "0.500", "0.1", "0", "GET", "/_matrix/client/v3/sync?full_state=true"),
           line % (BOT, "0.040", "0.003", "0.001", "GET", "/_matrix/client/v3/sync?full_state=true&filter=x"),
           line % (BOT, "0.064", "0.006", "0.002", "POST", "/_matrix/client/v3/join/!r"),
           line % (BOT, "0.016", "0.001", "0", "GET", "/_matrix/client/v3/sync?since=s1&full_state=false")]
    (tmp_path / "homeserver" / "synapse.log").write_text("\n".join(log) + "\n")
    return tmp_path


def test_a_boot_splits_into_spawn_the_bot_s_phases_the_notice_and_synapse_s_share(tmp_path: Path) -> None:
    [row] = bp.breakdown(_run(tmp_path))
    assert row["total (harness botBootMs)"] == 300.0 and row["spawn"] == 8.0
    # ready at 258 ms after the harness began; the bot's phases took 145 ms, so its code began at 113 ms
    assert row["to main"] == 105.0 and row["  CPU before main"] == 5.0 and row["  queued before main"] == 3.0
    assert row["sync"] == 128.0 and row["  sync cpu"] == 32.0 and row["  sync queue"] == 64.0
    assert row["  sync io"] == 32.0
    assert row["bot CPU to ready"] == 42.0 and row["bot queued to ready"] == 69.0
    assert row["notice"] == 32.0 and row["wake"] == 10.0
    assert row["synapse: first /sync"] == 40.0 and row["synapse: first /sync CPU"] == 4.0
    assert row["synapse: join"] == 64.0 and row["synapse: join CPU"] == 8.0


def test_a_run_without_the_marks_has_no_breakdown(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / "matrix-qa-summary.json").write_text(json.dumps({"scenarios": [{"id": "s", "botBootMs": 300.0}]}))
    assert bp.breakdown(run) == []


async def test_the_trace_follower_notes_when_it_read_the_ready_record(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"t": 1, "type": "start"}) + "\n")
    follower = TraceFollower(trace, tmp_path / "copy.jsonl", [], Stream(describe_record))
    await follower.read()
    assert follower.ready_read_at is None
    with trace.open("a") as fh:
        fh.write(json.dumps({"t": 2, "type": "ready"}) + "\n")
    await follower.read()
    assert follower.ready_read_at is not None and follower.ready_read_at > 0
