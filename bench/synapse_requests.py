"""Where a run's Synapse work came from, per client-server request: counts, CPU and database transactions.

    python bench/synapse_requests.py ARTIFACT_DIR [--top 25]

Reads ARTIFACT_DIR/homeserver/synapse.log (the embedded Synapse logs one "Processed request" line per request at
INFO) and prints, per (who, endpoint), the number of requests, their CPU (the request's own utime + stime, its
`ru=` field) plus their database time (`db=` transaction seconds), and their database transactions; then the same
per scenario on average. "Who" is the role in the user's localpart (mqa-ROLE-<scenario>-<run>: driver, bot,
observer, ...), "admin/anon" for unauthenticated requests (shared-secret registration). Room ids, event ids, user
ids and transaction ids are folded so one endpoint is one row.

What the log cannot show: work outside a request (the event persistence queue, notifying /sync waiters,
background jobs) and Synapse's boot; for those, profile Synapse (`py-spy record --pid PID --gil`).
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
    """(who, endpoint) -> [requests, cpu + db seconds, transactions]."""
    rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0])
    for line in lines:
        found = LINE.search(line)
        if not found:
            continue
        row = rows[(who(found["who"]), endpoint(found["method"], found["path"]))]
        row[0] += 1
        row[1] += float(found["utime"]) + float(found["stime"]) + float(found["db_s"])
        row[2] += int(found["txns"])
    return rows


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
    total = [sum(r[i] for r in rows.values()) for i in range(3)]
    per = max(scenarios, 1)
    print(f"{int(total[0])} requests, {total[1]:.2f} s request CPU + DB, {int(total[2])} transactions, "
          f"{scenarios} scenarios: per scenario {total[0] / per:.1f} requests, {total[1] / per * 1000:.0f} ms, "
          f"{total[2] / per:.0f} transactions")
    print(f"{'requests':>8} {'cpu+db s':>9} {'ms/req':>7} {'txns':>6} {'per scen':>8}  who        endpoint")
    for (role, name), (count, seconds, txns) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"{int(count):8d} {seconds:9.2f} {seconds / count * 1000:7.1f} {int(txns):6d} {count / per:8.1f}  "
              f"{role:10s} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
