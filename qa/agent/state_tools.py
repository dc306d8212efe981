"""The embedded agent's state mutations (its bot file's `state_mutations:`), run against a stopped bot's state
dir: `python -m qa.agent.state_tools NAME STATE_DIR [ARGS…]`. One function per mutation, in SUBCOMMANDS."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# SQLite checks this header first; garbage in its place is "file is not a database" on open, as after a disk
# fault or a half-written copy.
GARBAGE = b"matrix-qa: this crypto store was damaged on purpose\n" * 64


def corrupt_crypto_store(state_dir: Path, args: list[str]) -> str:
    stores = sorted((state_dir / "nio-store").glob("*.db"))
    if not stores:
        raise SystemExit(f"no crypto store (*.db) under {state_dir / 'nio-store'}")
    for db in stores:
        db.write_bytes(GARBAGE)
        for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            extra.unlink(missing_ok=True)  # a WAL could otherwise repair the main file
    return f"overwrote {len(stores)} crypto store file(s): {', '.join(d.name for d in stores)}"


SUBCOMMANDS: dict[str, Callable[[Path, list[str]], str]] = {
    "corrupt-crypto-store": corrupt_crypto_store,
}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in SUBCOMMANDS:
        print(f"usage: python -m qa.agent.state_tools {{{','.join(SUBCOMMANDS)}}} STATE_DIR [ARGS…]", file=sys.stderr)
        return 2
    state_dir = Path(argv[1])
    if not state_dir.is_dir():
        print(f"state dir {state_dir} does not exist", file=sys.stderr)
        return 2
    print(SUBCOMMANDS[argv[0]](state_dir, argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
