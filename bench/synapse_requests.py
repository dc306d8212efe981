"""Where a run's Synapse work came from, per client-server request: counts, CPU and database transactions.

    python bench/synapse_requests.py ARTIFACT_DIR [--top 25]

Reads ARTIFACT_DIR/homeserver/synapse.log (the embedded Synapse logs one "Processed request" line per request at
INFO) and prints, per (who, endpoint), the number of requests, their CPU (the request's own utime + stime, its
`ru=` field), their database time (`db=` transaction seconds: the database thread's work for the request, and on a
loaded machine also its waits for the GIL and a core), the two summed, and their database transactions; then the
same per scenario on average. Rows are ordered by CPU + DB. "Who" is the role in the user's localpart
(mqa-ROLE-<scenario>-<run>: driver, bot, observer, ...), "admin/anon" for unauthenticated requests (shared-secret
registration). Room ids, event ids, user ids and transaction ids are folded so one endpoint is one row. Last, the
test users' /sync requests during each scenario's setup (those that ended before its bot's first /sync).

What the log cannot show: work outside a request (the event persistence queue, notifying /sync waiters,
background jobs) and Synapse's boot; for those, bench/synapse_profile.py (py-spy on a whole run's Synapse).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(
    r"\{(?P<who>[^}]*)\} Processed request: [\d.]+sec/[-\d.]+sec ru=\((?P<utime>[\d.]+)sec, (?P<stime>[\d.]+)sec\) "
    r"db=\([\d.]+sec/(?P<db_s>[\d.]+)sec/(?P<txns>\d+)\) \d+B \d+\S* \"(?P<method>\w+) (?P<path>[^ ?]*)")
ROLE = re.compile(r"^@mqa-([a-z]+)-")
SCENARIO = re.compile(r"^@mqa-[a-z_]+-(?P<scenario>.+)-[0-9a-f]{6}:")


def endpoint(method: str, path: str) -> str:
    """`PUT /rooms/R/send/m.room.message/*` for every room, event and transaction id."""
    path = re.sub(r"^/_matrix/client/(r0|v3|v1|unstable)", "", path)
    path = re.sub(r"/rooms/[^/]+", "/rooms/R", path)
    path = re.sub(r"/(join|knock)/[^/]+", r"/\1/R", path)
    path = re.sub(r"/(send|sendToDevice|state|redact)/([^/]+)/.*", r"/\1/\2/*", path)
    path = re.sub(r"/(user|profile)/[^/]+", r"/\1/U", path)
    path = re.sub(r"/\$[^/]+", "/E", path)
    return f"{method} {path}"


def who(requester: str) -> str:
    found = ROLE.match(requester)
    return found.group(1) if found else ("admin/anon" if requester == "None" else "other")


def tally(lines: list[str]) -> dict[tuple[str, str], list[float]]:
    """(who, endpoint) -> [requests, cpu + db seconds, transactions, cpu seconds, db seconds]."""
    rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0, 0.0])
    for line in lines:
        found = LINE.search(line)
        if not found:
            continue
        row = rows[(who(found["who"]), endpoint(found["method"], found["path"]))]
        row[0] += 1
        cpu, db = float(found["utime"]) + float(found["stime"]), float(found["db_s"])
        row[1] += cpu + db
        row[2] += int(found["txns"])
        row[3] += cpu
        row[4] += db
    return rows


def setup_syncs(lines: list[str]) -> tuple[int, list[float]]:
    """The test users' /sync requests that ended before their scenario's bot made its first /sync (the scenario's
    setup: registration, rooms, joins): (scenarios seen, [requests, cpu + db seconds, transactions])."""
    bot_synced: set[str] = set()
    seen: set[str] = set()
    total = [0.0, 0.0, 0.0]
    for line in lines:
        found = LINE.search(line)
        scenario = SCENARIO.match(found["who"]) if found else None
        if not found or not scenario or not found["path"].endswith("/sync"):
            continue
        name = scenario["scenario"]
        seen.add(name)
        if who(found["who"]) == "bot":
            bot_synced.add(name)
        elif name not in bot_synced:
            total[0] += 1
            total[1] += float(found["utime"]) + float(found["stime"]) + float(found["db_s"])
            total[2] += int(found["txns"])
    return len(seen), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, help="a run's --output-dir")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    log = args.artifacts / "homeserver" / "synapse.log"
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        scenarios = len(json.loads((args.artifacts / "matrix-qa-summary.json").read_text())["scenarios"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read the run in {args.artifacts}: {exc}", file=sys.stderr)
        return 2
    rows = tally(lines)
    total = [sum(r[i] for r in rows.values()) for i in range(5)]
    per = max(scenarios, 1)
    print(f"{int(total[0])} requests, {total[1]:.2f} s request CPU + DB ({total[3]:.2f} CPU, {total[4]:.2f} DB), "
          f"{int(total[2])} transactions, {scenarios} scenarios: per scenario {total[0] / per:.1f} requests, "
          f"{total[1] / per * 1000:.0f} ms ({total[3] / per * 1000:.0f} CPU), {total[2] / per:.0f} transactions")
    print(f"{'requests':>8} {'cpu s':>6} {'db s':>6} {'cpu+db s':>9} {'ms/req':>7} {'txns':>6} {'per scen':>8}  "
          f"who        endpoint")
    for (role, name), (count, seconds, txns, cpu, db) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"{int(count):8d} {cpu:6.2f} {db:6.2f} {seconds:9.2f} {seconds / count * 1000:7.1f} {int(txns):6d} "
              f"{count / per:8.1f}  {role:10s} {name}")
    seen, (count, seconds, txns) = setup_syncs(lines)
    if seen:
        print(f"test users' /sync during setup (before the bot's first /sync), per scenario: {count / seen:.1f} "
              f"requests, {seconds / seen * 1000:.1f} ms CPU + DB, {txns / seen:.0f} transactions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
