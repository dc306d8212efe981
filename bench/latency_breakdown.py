"""Where reply latency goes: each reply of a run split into its hops, medians over the replies.

    python bench/latency_breakdown.py [--runs N] [--jobs J] [-- extra matrix-qa run arguments]
    python bench/latency_breakdown.py --analyze OUTPUT_DIR PROBE_DIR

The run goes with bench/latency_probe on PYTHONPATH (HTTP timings of every process, see its docstring); the
hops come from those timings, the bot's trace, the provider journal and the observed events, all on one
clock (qa.kernel.clock). A reply counts when its trigger and its answer were both sent by a probed room_send and the
answer was observed. Notices, local replies and replies after an approval (their window holds a person's
reaction) are left out, so the table is about one plain message → answer.

Hops (ms): the driver's send (Synapse persisting the event), Synapse waking the bot's /sync, the bot's turn
split at its trace records, the bot's send, and Synapse waking the observer's /sync. `model` is the bot's model
request minus the mock's simulated latency; its `sdk` part is the bot's own time before the HTTP request
leaves, `mock` the provider's handling. The hops start at the driver's HTTP request, so in an encrypted room
the driver's key sharing before it (which the summary's figure includes) is in none of them.

Then, per reply, ours (the bot's hops) against Synapse's (the four homeserver hops), and the ratio of the
measured reply latency to the Synapse floor: a raw sender and receiver on the run's own Synapse, measured while
the run goes on (bench/latency_probe/floor_probe.py; it adds a message every 0.25 s to the server's work).
Goals (issue 29): ours <= 10 ms p50, the ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "bench" / "latency_probe"

HOPS = (
    ("driver send (Synapse PUT)", "synapse"),
    ("send done -> bot /sync returns", "synapse"),
    ("bot: sync parsed -> inbound traced", "ours"),
    ("bot: inbound lock + append + release", "ours"),
    ("bot: release -> model request", "ours"),
    ("bot: model request (minus mock latency)", "ours"),
    ("  of which SDK before the HTTP request", "ours"),
    ("  of which mock provider handling", "ours"),
    ("bot: reply lock + append + release", "ours"),
    ("bot: release -> send starts", "ours"),
    ("bot send (Synapse PUT)", "synapse"),
    ("send done -> observer sees reply", "synapse"),
    ("total (as the summary counts it)", ""),
)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _at(records: list[dict[str, Any]], kind: str, purpose: str | None = None, last: bool = False) -> float | None:
    hits = [r["t"] for r in records if r.get("type") == kind and (purpose is None or r.get("purpose") == purpose)]
    return (hits[-1] if last else hits[0]) if hits else None


def breakdown(trace: list[dict[str, Any]], http: list[dict[str, Any]], journal: list[dict[str, Any]],
              seen: dict[str, float]) -> list[dict[str, float]]:
    """Pure: one dict of hop → ms per reply in this bot's trace that can be followed end to end."""
    sends = {h["ev"]: h for h in http if h.get("ev")}
    pids = {r.get("pid") for r in trace if r.get("type") == "start"}
    bot_sync_records = sorted((h for h in http if h.get("pid") in pids and h["u"].endswith("/sync")),
                              key=lambda h: h["t1"])
    bot_syncs = [h["t1"] for h in bot_sync_records]
    sdk_sends = [h for h in http if h.get("httpx") and h.get("pid") in pids and "chat/completions" in h["u"]]
    rows = []
    for sent in (r for r in trace if r.get("type") == "reply.sent" and not r.get("local") and not r.get("notice")):
        attempt = [r for r in trace if r.get("attempt") == sent.get("attempt")]
        trigger, reply = sends.get(sent.get("inReplyTo")), sends.get(sent.get("eventId"))
        inbound = next((r for r in trace if r.get("type") == "inbound" and r.get("eventId") == sent.get("inReplyTo")),
                       None)
        if trigger is None or reply is None or inbound is None or sent["eventId"] not in seen:
            continue
        if any(r.get("type", "").startswith("approval.") for r in attempt):
            continue

        released_in, released_out = _at(attempt, "lock.release", "inbound"), _at(attempt, "lock.release", "reply")
        model_start, model_end = _at(attempt, "model.request.start"), _at(attempt, "model.request.end", last=True)
        woke = [t for t in bot_syncs if t <= inbound["t"]]
        if None in (released_in, released_out, model_start, model_end) or not woke:
            continue
        served = [j for j in journal if str(j.get("path", "")).endswith("/chat/completions")
                  and model_start - 1 <= float(j.get("startedAt") or 0) <= model_end]
        simulated = sum(float(j.get("latencyMs") or 0) for j in served)
        handling = sum(float(j["finishedAt"]) - float(j["startedAt"]) for j in served) - simulated
        first_http = min((h["t0"] for h in sdk_sends if model_start <= h["t0"] <= model_end), default=model_start)
        values = (
            trigger["t1"] - trigger["t0"], woke[-1] - trigger["t1"], inbound["t"] - woke[-1],
            released_in - inbound["t"], model_start - released_in, model_end - model_start - simulated,
            first_http - model_start, handling, released_out - model_end, reply["t0"] - released_out,
            reply["t1"] - reply["t0"], seen[sent["eventId"]] - reply["t1"],
            seen[sent["eventId"]] - trigger["t0"] - simulated,
        )
        row = dict(zip((name for name, _ in HOPS), values, strict=True))
        woke_sync = bot_sync_records[len(woke) - 1]
        if "c1" in woke_sync and "c0" in reply:
            row[BOT_CPU] = reply["c0"] - woke_sync["c1"]
        rows.append(row)
    return rows


def floor_samples(probe_dir: Path) -> list[dict[str, float]]:
    path = probe_dir / "floor.jsonl"
    return _jsonl(path) if path.exists() else []


def analyze(output_dir: Path, probe_dir: Path) -> list[dict[str, float]]:
    http = [r for f in sorted(probe_dir.glob("http-*.jsonl")) for r in _jsonl(f)]
    journal = json.loads((output_dir / "provider-journal.json").read_text())
    seen: dict[str, float] = {}
    for event in json.loads((output_dir / "matrix-qa-observed-events.json").read_text()):
        seen.setdefault(event["event_id"], event["_seenMs"])
    return [row for trace in sorted(output_dir.glob("scenarios/*/bot-trace.jsonl"))
            for row in breakdown(_jsonl(trace), http, journal, seen)]


# The hops that add up to a reply, by whose they are (the "of which" rows are parts of the model request).
OURS = [name for name, whose in HOPS if whose == "ours" and not name.startswith(" ")]
SYNAPSES = [name for name, whose in HOPS if whose == "synapse"]
TOTAL = HOPS[-1][0]
# The bot process's CPU from its /sync's answer to its send's start (the probe's process_time): our hops' CPU
# (the mock's handling, in the harness, aside), which a loaded machine's scheduler does not inflate.
BOT_CPU = "bot CPU, sync returned -> send starts"


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def table(rows: list[dict[str, float]], floor: list[dict[str, float]] | None = None) -> str:
    lines = [f"{len(rows)} replies", f"{'hop':42s} {'whose':8s} {'median':>7s} {'p90':>7s}"]
    for name, whose in HOPS:
        values = sorted(r[name] for r in rows)
        if values:
            lines.append(f"{name:42s} {whose:8s} {statistics.median(values):7.1f} {_p(values, 0.9):7.1f}")
    if rows:
        lines += summary(rows, floor or [])
    return "\n".join(lines)


def summary(rows: list[dict[str, float]], floor: list[dict[str, float]]) -> list[str]:
    """Ours against Synapse's per reply (each reply's hops summed, then the median), and the measured reply
    latency against the floor: a raw sender and receiver on the same Synapse in the same run (floor_probe.py),
    two of whose hops (a send, then the receiver's /sync waking) a reply needs at least: driver -> bot, then
    bot -> observer."""
    ours = [sum(r[name] for name in OURS) for r in rows]
    synapse = [sum(r[name] for name in SYNAPSES) for r in rows]
    total = [r[TOTAL] for r in rows]
    lines = ["per reply (hops summed, then median / p90):",
             f"  {'ours':40s} {statistics.median(ours):7.1f} {_p(ours, 0.9):7.1f}   goal <= 10 ms p50",
             f"  {'Synapse':40s} {statistics.median(synapse):7.1f} {_p(synapse, 0.9):7.1f}"]
    cpu = [r[BOT_CPU] for r in rows if BOT_CPU in r]
    if cpu:
        lines.append(f"  {BOT_CPU:40s} {statistics.median(cpu):7.2f} {_p(cpu, 0.9):7.2f}   ({len(cpu)} replies)")
    if not floor:
        return [*lines, "Synapse floor: not measured (run without --analyze, or no floor.jsonl in the probe dir)"]
    hop = [f["t2"] - f["t0"] for f in floor]
    send = [f["t1"] - f["t0"] for f in floor]
    wake = [f["t2"] - f["t1"] for f in floor]
    floor_reply = 2 * statistics.median(hop)
    ratio = statistics.median(total) / floor_reply
    return [*lines,
            f"Synapse floor, raw sender and receiver in the same run ({len(floor)} messages): "
            f"send {statistics.median(send):.1f} ms + /sync wakes {statistics.median(wake):.1f} ms = one hop "
            f"{statistics.median(hop):.1f} ms p50 ({_p(hop, 0.9):.1f} p90); a reply needs two: {floor_reply:.1f} ms",
            f"ratio reply latency p50 / floor: {statistics.median(total):.1f} / {floor_reply:.1f} = {ratio:.2f}"
            f"   goal <= 1.3"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--analyze", nargs=2, type=Path, metavar=("OUTPUT_DIR", "PROBE_DIR"))
    parser.add_argument("extra", nargs="*", help="more arguments for matrix-qa run (after --)")
    args = parser.parse_args()
    if args.analyze:
        print(table(analyze(*args.analyze), floor_samples(args.analyze[1])))
        return 0
    rows: list[dict[str, float]] = []
    floor: list[dict[str, float]] = []
    for _ in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="latency-breakdown-"))
        (work / "probe").mkdir()
        env = {**os.environ, "MATRIX_QA_LATENCY_PROBE": str(work / "probe"), "MATRIX_QA_LATENCY_FLOOR": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), str(PROBE), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "qa.cli", "run", "--output-dir", str(work / "out"), "--jobs", str(args.jobs),
               *args.extra]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        said = (done.stdout + done.stderr).splitlines()
        print(next((line for line in said if line.lstrip().startswith("reply latency")), "no latency line"))
        rows += analyze(work / "out", work / "probe")
        floor += floor_samples(work / "probe")
    print(table(rows, floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
