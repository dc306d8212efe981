"""The embedded agent's state mutations (bot file `state_mutations:`, step `mutate_bot_state`), run while the
bot is stopped: `python -m qa.agent.state_tools NAME STATE_DIR`.

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

TOKEN = "sync-token.json"
SNAPSHOT = "sync-token.snapshot.json"


def snapshot_sync(state: Path) -> str:
    if not (state / TOKEN).exists():
        raise SystemExit(f"no {TOKEN} in {state}: the bot has not synced yet")
    shutil.copyfile(state / TOKEN, state / SNAPSHOT)
    return f"sync position saved to {SNAPSHOT}"


def rewind_sync(state: Path) -> str:
    if not (state / SNAPSHOT).exists():
        raise SystemExit(f"no {SNAPSHOT} in {state}: run snapshot-sync in an earlier stop first")
    shutil.copyfile(state / SNAPSHOT, state / TOKEN)
    return f"sync position rewound to the snapshot in {SNAPSHOT}"


MUTATIONS: dict[str, Callable[[Path], str]] = {"snapshot-sync": snapshot_sync, "rewind-sync": rewind_sync}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MUTATIONS:
        print(f"usage: python -m qa.agent.state_tools {{{'|'.join(MUTATIONS)}}} STATE_DIR", file=sys.stderr)
        return 2
    try:
        print(MUTATIONS[argv[0]](Path(argv[1])))
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
