"""What a Synapse setting saves per scenario: two embedded Synapses side by side, measured in turn on one load.

    python bench/synapse_config_pairs.py --variant '{"push": {"enabled": true}}' [--base '{...}'] [--pairs 10]
    python bench/synapse_config_pairs.py --variant '{}' --base-plain-synapse   # what qa's launcher saves
    python bench/synapse_config_pairs.py --variant '{}' --base-db-thread       # what running SQLite inline saves
    python bench/synapse_config_pairs.py --variant '{}' --base-env MATRIX_QA_SYNAPSE_METRIC_LABELS=1  # see below

A runs qa's test-server config with --variant merged in, B with --base merged in (default: nothing, qa's config as
it is). Both boot once; then the same scenario-shaped batch runs on A and on B in turn (A B, B A, A B ...: the order
alternates), and each Synapse's CPU (utime + stime from /proc) is counted over its own batch only, so both sides of
a pair meet the same machine load. A batch is --jobs scenarios at once, each: three users registered with a
session, each long-polling /sync, a private_chat createRoom naming the room and inviting two of them, both joins,
and --messages messages; then a short settle for the syncs and background work it caused.

--base-plain-synapse starts B as `python -m synapse.app.homeserver`, without qa.homeserver.seeded_boot (which
remembers jsonschema's schema checks), on the same config. --base-db-thread starts B through the launcher but with
MATRIX_QA_SYNAPSE_DB_THREAD=1: Synapse keeps its database thread (qa.homeserver.inline_db). --base-env NAME=VALUE
(repeatable) starts B through the launcher with those variables set (the launcher's switches back to Synapse as it
is; MATRIX_QA_SYNAPSE_METRIC_LABELS=1: what the metric label cache saves, qa.homeserver.metric_labels). Neither
goes with --base-plain-synapse, which has no launcher to switch: that combination is refused.

Printed: each side's median CPU per scenario, the median and quartiles of the per-pair ratio A/B, and the ratio of
the sums. Not a test: nothing is asserted. Synapse's CPU, not wall time: the wall of a loaded machine drifts more
than a setting moves it, and Synapse's one thread is the run's floor (issue 29).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qa.homeserver.base import UserCredentials
from qa.homeserver.seeded_boot import DB_THREAD_ENV
from qa.homeserver.synapse import SynapseHomeserver

CLIENT = "/_matrix/client/v3"
SETTLE_S = 0.2  # after a batch: the syncs it woke and its background work land on its own Synapse's clock


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _auth(user: UserCredentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.access_token}"}


async def _sync_forever(http: aiohttp.ClientSession, base: str, user: UserCredentials) -> None:
    """A test user's sync loop as qa.actors runs it: a full first sync, then long polls."""
    since = None
    while True:
        params = {"timeout": "30000", **({"since": since} if since else {"full_state": "true"})}
        try:
            async with http.get(f"{base}{CLIENT}/sync", params=params, headers=_auth(user)) as resp:
                since = (await resp.json())["next_batch"]
        except (aiohttp.ClientError, TimeoutError, KeyError):
            await asyncio.sleep(0.1)


async def _scenario(hs: SynapseHomeserver, http: aiohttp.ClientSession, tag: str, messages: int,
                    syncs: list[asyncio.Task[None]]) -> None:
    bot, driver, member = await asyncio.gather(*(
        hs.register_session(f"b-{role}-{tag}-{secrets.token_hex(3)}", secrets.token_urlsafe(12), device_name="bench")
        for role in ("bot", "driver", "member")))
    syncs.extend(asyncio.create_task(_sync_forever(http, hs.base_url, u)) for u in (bot, driver, member))
    await asyncio.sleep(0.05)  # the first syncs in flight, as the runner waits for them before rooms
    body = {"name": f"room {tag}", "invite": [bot.user_id, member.user_id], "preset": "private_chat"}
    async with http.post(f"{hs.base_url}{CLIENT}/createRoom", json=body, headers=_auth(driver)) as resp:
        room = (await resp.json())["room_id"]
    for user in (bot, member):
        async with http.post(f"{hs.base_url}{CLIENT}/join/{room}", json={}, headers=_auth(user)) as resp:
            await resp.read()
    for n in range(messages):
        sender = (driver, bot)[n % 2]
        content = {"msgtype": "m.text", "body": f"message {n}"}
        async with http.put(f"{hs.base_url}{CLIENT}/rooms/{room}/send/m.room.message/t{n}", json=content,
                            headers=_auth(sender)) as resp:
            await resp.read()


async def _batch(hs: SynapseHomeserver, http: aiohttp.ClientSession, tag: str, args: argparse.Namespace) -> float:
    """Synapse CPU seconds for one batch of --jobs scenarios on `hs`."""
    assert hs.pid is not None
    began = cpu_s(hs.pid)
    syncs: list[asyncio.Task[None]] = []
    await asyncio.gather(*(_scenario(hs, http, f"{tag}-{j}", args.messages, syncs) for j in range(args.jobs)))
    await asyncio.sleep(SETTLE_S)
    used = cpu_s(hs.pid) - began
    for task in syncs:
        task.cancel()
    await asyncio.gather(*syncs, return_exceptions=True)
    return used


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="synapse-pairs-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    a = SynapseHomeserver(work / "a", work / "a-log", extra_config=json.loads(args.variant))
    b = SynapseHomeserver(work / "b", work / "b-log", extra_config=json.loads(args.base))
    if args.base_plain_synapse:
        b._launch_command = lambda: (  # type: ignore[method-assign]
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(b.config_path)], None)
    elif args.base_db_thread or args.base_env:
        launch = b._launch_command
        extra = dict(item.split("=", 1) for item in args.base_env)
        if args.base_db_thread:
            extra[DB_THREAD_ENV] = "1"

        def with_env() -> tuple[list[str], dict[str, str]]:
            argv, env = launch()
            return argv, {**(os.environ if env is None else env), **extra}

        b._launch_command = with_env  # type: ignore[method-assign]
    a_cpu: list[float] = []
    b_cpu: list[float] = []
    try:
        await asyncio.gather(a.start(), b.start())
        connector = aiohttp.TCPConnector(limit=0)  # every long poll holds a connection
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
            await _batch(a, http, "warm-a", args)
            await _batch(b, http, "warm-b", args)
            for k in range(args.pairs):
                order = (a, b) if k % 2 == 0 else (b, a)
                used = {id(hs): await _batch(hs, http, f"{k}-{i}", args) for i, hs in enumerate(order)}
                a_cpu.append(used[id(a)])
                b_cpu.append(used[id(b)])
    finally:
        await asyncio.gather(a.stop(), b.stop())
        shutil.rmtree(work, ignore_errors=True)  # two Synapses' databases on /dev/shm: ~8 MiB a call
    ratios = [x / y for x, y in zip(a_cpu, b_cpu, strict=True) if y > 0]
    return {
        "A (variant)": args.variant,
        "B (base)": args.base + (" on plain Synapse" if args.base_plain_synapse else "")
        + (" with the database thread" if args.base_db_thread else "") + "".join(f" with {e}" for e in args.base_env),
        "pairs": len(ratios),
        "A cpu ms/scenario (median)": round(statistics.median(a_cpu) / args.jobs * 1000, 1),
        "B cpu ms/scenario (median)": round(statistics.median(b_cpu) / args.jobs * 1000, 1),
        "A/B per pair: median": round(statistics.median(ratios), 3),
        "A/B per pair: quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)[::2]],
        "A/B of the sums": round(sum(a_cpu) / sum(b_cpu), 3),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="JSON merged into A's config (build_synapse_config extra)")
    parser.add_argument("--base", default="{}", help="JSON merged into B's config (default: none)")
    parser.add_argument("--base-plain-synapse", action="store_true",
                        help="B without qa's Synapse launcher (python -m synapse.app.homeserver)")
    parser.add_argument("--base-db-thread", action="store_true",
                        help=f"B keeps Synapse's database thread ({DB_THREAD_ENV}=1)")
    parser.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE",
                        help="B's launcher started with this variable set (repeatable)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="scenarios at once in a batch (the run's default)")
    parser.add_argument("--messages", type=int, default=6)
    args = parser.parse_args(argv)
    # Plain Synapse is started without the launcher, so without its environment switches: B's label would claim them.
    if args.base_plain_synapse and (args.base_env or args.base_db_thread):
        parser.error("--base-plain-synapse starts B without qa's launcher: --base-env and --base-db-thread would be "
                     "ignored there; give one or the other")
    for item in args.base_env:
        name, equals, _ = item.partition("=")
        if not equals or not name:
            parser.error(f"--base-env {item!r}: expected NAME=VALUE (e.g. MATRIX_QA_SYNAPSE_METRIC_LABELS=1)")
    return args


def main() -> int:
    args = parse_args()
    for line in json.dumps(asyncio.run(_measure(args)), indent=1, ensure_ascii=False).splitlines():
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
