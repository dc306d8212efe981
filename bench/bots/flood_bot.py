#!/usr/bin/env python3
"""A bench bot (bench/bot_output_memory.py): FLOOD_MB megabytes of output and FLOOD_RECORDS trace records before it
says it is ready, then the independent nio test bot (tests/bots/nio_reply_bot.py), which answers as usual."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "bots"))


def flood() -> None:
    megabytes = int(os.environ.get("FLOOD_MB", "200"))
    records = int(os.environ.get("FLOOD_RECORDS", "100000"))
    chunk = (b"flood: a bot that talks a lot before it is ready" + b"." * 50 + b"\n") * 10_486  # about 1 MiB
    out = sys.stdout.buffer
    for _ in range(megabytes):
        out.write(chunk)
    out.flush()
    # Records of a type the harness keeps and ignores (docs/trace-format.md), on the shared monotonic clock.
    with open(os.environ["MATRIX_QA_TRACE_FILE"], "a", encoding="utf-8") as trace:
        for n in range(records):
            trace.write(json.dumps({"t": round(time.monotonic() * 1000, 3), "type": "bench.noise", "n": n}) + "\n")


if __name__ == "__main__":
    flood()
    import nio_reply_bot

    sys.exit(nio_reply_bot.main([]))
