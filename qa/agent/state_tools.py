"""The embedded agent's `state_mutations` (bot.yaml; step `mutate_bot_state`): changes to a stopped bot's
saved state that only the bot knows how to make. `python -m qa.agent.state_tools NAME --state-dir DIR [...]`.

Each mutation is one entry of MUTATIONS (name -> (function, help)); other mutations join the same table.
Bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from qa.agent.lock import lock_path_for
from qa.agent.policy import session_key
from qa.clock import mono_ms, utc_now_iso


class MutationError(Exception):
    pass


# --- session locks (the lock's life; issue 19) -----------------------------------------------------------

def dead_pid() -> int:
    """A pid that certainly belonged to a process that has exited: one we started and reaped ourselves."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def plant_stale_lock(state_dir: Path, argv: list[str]) -> str:
    """A fresh-looking lock file of a dead process beside each room's top-level transcript (created if absent):
    only the dead-owner rule can reclaim it, staleMs is far away."""
    parser = argparse.ArgumentParser(prog="plant-stale-lock")
    parser.add_argument("--room", action="append", default=None, help="room id (default: $MATRIX_QA_ROOM_IDS)")
    args = parser.parse_args(argv)
    rooms = args.room or [r for r in os.environ.get("MATRIX_QA_ROOM_IDS", "").split(",") if r]
    if not rooms:
        raise MutationError("no room: pass --room or set MATRIX_QA_ROOM_IDS")
    from qa.agent.session import transcript_file_name

    sessions = state_dir / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    pid = dead_pid()
    planted = []
    for room in rooms:
        key = session_key(room, None)
        transcript = sessions / transcript_file_name(key)
        meta = transcript.with_suffix(".meta.json")
        if not meta.exists():
            meta.write_text(json.dumps({"key": key, "roomId": room, "threadRoot": None}))
        payload = {"pid": pid, "createdAt": utc_now_iso(), "createdMono": round(mono_ms(), 3),
                   "attempt": f"turn-{pid}-1", "maxHoldMs": 5000, "token": secrets.token_hex(16),
                   "instance": "planted"}
        lock_path_for(transcript).write_text(json.dumps(payload))
        planted.append(str(lock_path_for(transcript)))
    return f"planted {len(planted)} lock(s) of dead pid {pid}: {', '.join(planted)}"


# --- the table ---------------------------------------------------------------------------------------------

MUTATIONS: dict[str, tuple[Callable[[Path, list[str]], str], str]] = {
    "plant-stale-lock": (plant_stale_lock, "a dead process's lock file on each room's session"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MUTATIONS:
        known = ", ".join(MUTATIONS)
        print(f"state_tools: unknown mutation {argv[0] if argv else '(none)'!r} (known: {known})", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if "--state-dir" not in rest or rest.index("--state-dir") + 1 >= len(rest):
        print(f"state_tools {name}: --state-dir DIR is required", file=sys.stderr)
        return 2
    at = rest.index("--state-dir")
    state_dir = Path(rest[at + 1])
    rest = rest[:at] + rest[at + 2:]
    try:
        print(MUTATIONS[name][0](state_dir, rest))
    except MutationError as exc:
        print(f"state_tools {name}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
