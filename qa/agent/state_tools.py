"""The embedded agent's state mutations (bot file `state_mutations:`, step `mutate_bot_state`), run while the
bot is stopped: `python -m qa.agent.state_tools NAME STATE_DIR [ARGS…]`. One function per mutation, in SUBCOMMANDS.

The agent keeps one sync position (`sync-token.json`), nothing older. An "old" position is therefore made in
two stop/mutate/start cycles: `snapshot-sync` copies the current position aside (`sync-token.snapshot.json`,
which the agent never reads), and a later `rewind-sync` puts it back, so the next start syncs from where the
bot was at the snapshot and the homeserver delivers everything since then a second time.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

# SQLite checks this header first; garbage in its place is "file is not a database" on open, as after a disk
# fault or a half-written copy.
GARBAGE = b"matrix-qa: this crypto store was damaged on purpose\n" * 64
TOKEN = "sync-token.json"
SNAPSHOT = "sync-token.snapshot.json"


def corrupt_crypto_store(state_dir: Path, args: list[str]) -> str:
    stores = sorted((state_dir / "nio-store").glob("*.db"))
    if not stores:
        raise SystemExit(f"no crypto store (*.db) under {state_dir / 'nio-store'}")
    for db in stores:
        db.write_bytes(GARBAGE)
        for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            extra.unlink(missing_ok=True)  # a WAL could otherwise repair the main file
    return f"overwrote {len(stores)} crypto store file(s): {', '.join(d.name for d in stores)}"


def snapshot_sync(state: Path, args: list[str]) -> str:
    if not (state / TOKEN).exists():
        raise SystemExit(f"no {TOKEN} in {state}: the bot has not synced yet")
    shutil.copyfile(state / TOKEN, state / SNAPSHOT)
    return f"sync position saved to {SNAPSHOT}"


def rewind_sync(state: Path, args: list[str]) -> str:
    if not (state / SNAPSHOT).exists():
        raise SystemExit(f"no {SNAPSHOT} in {state}: run snapshot-sync in an earlier stop first")
    shutil.copyfile(state / SNAPSHOT, state / TOKEN)
    return f"sync position rewound to the snapshot in {SNAPSHOT}"


SUBCOMMANDS: dict[str, Callable[[Path, list[str]], str]] = {
    "corrupt-crypto-store": corrupt_crypto_store,
    "snapshot-sync": snapshot_sync,
    "rewind-sync": rewind_sync,
}


def main(argv: list[str]) -> int:
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
    except SystemExit as exc:  # a mutation's own "cannot", with the reason
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
