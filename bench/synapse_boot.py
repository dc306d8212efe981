"""Embedded Synapse boot: with and without the pristine database template, interleaved run by run.

    python bench/synapse_boot.py [--runs N]

Each run starts a fresh SynapseHomeserver twice (once creating its schema, once from the template, in
alternating order so both see the same machine load), registers four users and restarts it once.
Prints medians / min / max in milliseconds. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa.homeserver.synapse import SynapseHomeserver


async def one_boot(tmp: Path, template_dir: Path | None) -> dict[str, float]:
    hs = SynapseHomeserver(tmp / "work", tmp / "logs", template_dir=template_dir)
    try:
        began = time.monotonic()
        await hs.start()
        boot = hs.boot_ms or 0.0
        start_call = (time.monotonic() - began) * 1000
        began = time.monotonic()
        await asyncio.gather(*(hs.register_user(f"u{i}", "pw") for i in range(4)))
        register = (time.monotonic() - began) * 1000
        await hs.restart()
        return {"boot": boot, "start_call": start_call, "register4": register, "restart_boot": hs.boot_ms or 0.0}
    finally:
        await hs.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"schema": [], "template": []}
    with tempfile.TemporaryDirectory(prefix="mqa-boot-") as tmp_:
        tmp = Path(tmp_)
        cache = tmp / "cache"
        await one_boot(tmp / "warmup", cache)  # builds the template (and warms the page cache)
        for i in range(args.runs):
            order = ["schema", "template"] if i % 2 == 0 else ["template", "schema"]
            for mode in order:
                rows[mode].append(await one_boot(tmp / f"{mode}{i}", cache if mode == "template" else None))
    for mode, runs in rows.items():
        print(f"{mode} ({len(runs)} runs; ms median / min / max)")
        for key in runs[0]:
            values = [r[key] for r in runs]
            print(f"  {key:14} {statistics.median(values):7.0f} {min(values):7.0f} {max(values):7.0f}")


if __name__ == "__main__":
    asyncio.run(main())
