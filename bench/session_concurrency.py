"""Session-concurrency benchmark: 32 sessions ask the bot at once while the mock model takes 1 s per answer.

    python bench/session_concurrency.py [--sessions 32]

A generated scenario (in a temp dir): one room, one thread per session. The driver posts the thread roots
(no mention: the bot drops them), then the 32 questions back to back, then expects every answer. A bot that
runs sessions side by side answers them all about 1 s after the last question; one that serializes them
needs 32 s. Prints, from the run's artifacts (no clock of this script's own):

- first question → last answer, on the homeserver's clock (origin_server_ts) and on the harness's (when the
  driver's sync saw each event), and how much of it the driver spent sending the questions;
- the model requests' overlap (most in flight at once, from the mock provider's journal) and the bot's
  per-turn time (turn.start → turn.end in its trace).

Goal: every session answered within 2.5 s of the first question.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from cli_run import REPO, run_matrix_qa

RULES = REPO / "fixtures" / "mock-provider" / "bench-sessions.yaml"
RULE_NAME = "bench-session-marker"
SCENARIO_ID = "bench-sessions"
GOAL_S = 2.5


def scenario(sessions: int) -> dict[str, Any]:
    roots = [{"send": {"as": "driver", "body": f"session bench root {i}", "id": f"r{i}"}} for i in range(sessions)]
    asks = [{"send": {"as": "driver", "mention": "bot", "thread": f"r{i}", "body": f"session bench marker: S{i}",
                      "id": f"q{i}"}} for i in range(sessions)]
    expects = [{"expect_reply": {"to": f"q{i}", "body": f"S{i}", "thread": f"r{i}"}} for i in range(sessions)]
    return {"id": SCENARIO_ID, "title": f"{sessions} sessions asked at once, 1 s model", "profiles": ["bench"],
            "timeout": f"{max(120, sessions * 3)}s", "steps": roots + asks + expects}


def run(scenarios_dir: Path, out: Path) -> dict[str, Any]:
    summary, _ = run_matrix_qa(["--scenarios-dir", str(scenarios_dir), "--no-builtin-scenarios", "--profile", "bench",
                                "--provider-rules", str(RULES)], out)
    return summary


def max_in_flight(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in edges:  # an end sorts before a start at the same instant: touching is not overlapping
        current += step
        most = max(most, current)
    return most


def analyse(out: Path, sessions: int) -> dict[str, float]:
    events = json.loads((out / "matrix-qa-observed-events.json").read_text())
    messages = [e for e in events if e.get("type") == "m.room.message"]
    asks = [e for e in messages if "driver" in e["sender"]
            and (e.get("content", {}).get("m.relates_to") or {}).get("rel_type") == "m.thread"]
    answers = [e for e in messages if "-bot-" in e["sender"]]
    if len(asks) != sessions or len(answers) != sessions:
        sys.exit(f"expected {sessions} questions and answers, saw {len(asks)} and {len(answers)}")
    journal = json.loads((out / "provider-journal.json").read_text())
    model = [(r["startedAt"], r["finishedAt"]) for r in journal if r.get("rule") == RULE_NAME]
    trace = [json.loads(line) for line in (out / "scenarios" / SCENARIO_ID / "bot-trace.jsonl").open()]
    starts = {r["eventId"]: r["t"] for r in trace if r.get("type") == "turn.start"}
    turns = [r["t"] - starts[r["eventId"]] for r in trace if r.get("type") == "turn.end" and r["eventId"] in starts]
    return {
        "server_first_ask_to_last_answer_s": (max(e["origin_server_ts"] for e in answers)
                                              - min(e["origin_server_ts"] for e in asks)) / 1000,
        "harness_first_ask_to_last_answer_s": (max(e["_seenMs"] for e in answers)
                                               - min(e["_seenMs"] for e in asks)) / 1000,
        "sending_the_questions_s": (max(e["origin_server_ts"] for e in asks)
                                    - min(e["origin_server_ts"] for e in asks)) / 1000,
        "model_requests": len(model),
        "model_requests_in_flight_max": max_in_flight(model),
        "model_first_start_to_last_end_s": (max(e for _, e in model) - min(s for s, _ in model)) / 1000,
        "bot_turn_p50_s": statistics.median(turns) / 1000,
        "bot_turn_max_s": max(turns) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mqa-sessions-bench-") as tmp:
        scenarios_dir = Path(tmp) / "scenarios"
        scenarios_dir.mkdir()
        (scenarios_dir / f"{SCENARIO_ID}.yaml").write_text(yaml.safe_dump(scenario(args.sessions), sort_keys=False))
        summary = run(scenarios_dir, Path(tmp) / "out")
        numbers = analyse(Path(tmp) / "out", args.sessions)
    print(f"{args.sessions} sessions, one question each at once, mock model latency 1 s; run {summary['status']}")
    for key, value in numbers.items():
        print(f"  {key:36} {value:8.2f}" if isinstance(value, float) else f"  {key:36} {value:8d}")
    wall = numbers["server_first_ask_to_last_answer_s"]
    print(f"goal: all answered within {GOAL_S:.1f} s of the first question: {wall:.2f} s "
          f"({wall / GOAL_S:.2f} of goal); serialized would be >= {args.sessions:.0f} s")


if __name__ == "__main__":
    main()
