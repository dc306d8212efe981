"""The embedded agent's state mutations (bot file `state_mutations:`, step `mutate_bot_state`): changes to a
stopped bot's saved state that only the bot knows how to make.
`python -m qa.agent.state_tools NAME STATE_DIR [ARGS…]`. One function per mutation, in SUBCOMMANDS.

Bad usage (no such mutation, no state dir) is one line on stderr and exit 2; a mutation that cannot be made
(nothing to corrupt, no snapshot to rewind to, no room) is one line and exit 1.

The agent keeps one sync position (`sync-token.json`), nothing older. An "old" position is therefore made in
two stop/mutate/start cycles: `snapshot-sync` copies the current position aside (`sync-token.snapshot.json`,
which the agent never reads), and a later `rewind-sync` puts it back, so the next start syncs from where the
bot was at the snapshot and the homeserver delivers everything since then a second time.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from qa.agent.lock import lock_path_for
from qa.agent.policy import session_key
from qa.kernel.clock import mono_ms, utc_now_iso

# SQLite checks this header first; garbage in its place is "file is not a database" on open, as after a disk
# fault or a half-written copy.
GARBAGE = b"matrix-qa: this crypto store was damaged on purpose\n" * 64
TOKEN = "sync-token.json"
SNAPSHOT = "sync-token.snapshot.json"


class MutationError(Exception):
    """The mutation cannot be made on this state (the reason is the message)."""


# --- E2EE (issue 15) ---------------------------------------------------------------------------------------

def corrupt_crypto_store(state_dir: Path, args: list[str]) -> str:
    stores = sorted((state_dir / "nio-store").glob("*.db"))
    if not stores:
        raise MutationError(f"no crypto store (*.db) under {state_dir / 'nio-store'}")
    for db in stores:
        db.write_bytes(GARBAGE)
        for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            extra.unlink(missing_ok=True)  # a WAL could otherwise repair the main file
    return f"overwrote {len(stores)} crypto store file(s): {', '.join(d.name for d in stores)}"


# --- the sync position (issue 13) --------------------------------------------------------------------------

def snapshot_sync(state: Path, args: list[str]) -> str:
    if not (state / TOKEN).exists():
        raise MutationError(f"no {TOKEN} in {state}: the bot has not synced yet")
    shutil.copyfile(state / TOKEN, state / SNAPSHOT)
    return f"sync position saved to {SNAPSHOT}"


def rewind_sync(state: Path, args: list[str]) -> str:
    if not (state / SNAPSHOT).exists():
        raise MutationError(f"no {SNAPSHOT} in {state}: run snapshot-sync in an earlier stop first")
    shutil.copyfile(state / SNAPSHOT, state / TOKEN)
    return f"sync position rewound to the snapshot in {SNAPSHOT}"


# --- session locks (the lock's life; issue 19) -------------------------------------------------------------

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
    from qa.agent.transcript import transcript_file_name

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

SUBCOMMANDS: dict[str, Callable[[Path, list[str]], str]] = {
    "corrupt-crypto-store": corrupt_crypto_store,
    "snapshot-sync": snapshot_sync,
    "rewind-sync": rewind_sync,
    "plant-stale-lock": plant_stale_lock,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in SUBCOMMANDS:
        print(f"usage: python -m qa.agent.state_tools {{{'|'.join(SUBCOMMANDS)}}} STATE_DIR [ARGS…]",
              file=sys.stderr)
        return 2
    state_dir = Path(argv[1])
    if not state_dir.is_dir():
        print(f"state dir {state_dir} does not exist", file=sys.stderr)
        return 2
    try:
        print(SUBCOMMANDS[argv[0]](state_dir, argv[2:]))
    except MutationError as exc:  # a mutation's own "cannot", with the reason
        print(f"state_tools {argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
