"""How fast the harness takes in a bot's output and trace: the time from starting a bot to its ready line.

    python bench/bot_output_throughput.py [--mb 100] [--records 100000] [--secrets 10 100] [--repeat 2]

No homeserver: a real BotUnderTest (qa.harness.bot_process) starts a bot that prints MB megabytes of 100-byte lines
and then its ready line (readiness `log`), and one that writes RECORDS trace records and then a `ready` record
(readiness `trace`), each with the run's list of secrets at the sizes asked (a run adds a few secrets per
scenario: passwords, tokens, so a long run's later bots are redacted against many). Prints, per case, the best
wall time from start to ready over the repeats, the output rate, and the harness's own CPU time (the bot's is not
counted); the bot writes as fast as it can, so the rate is the harness's. Every byte must reach bot.log, every
record the trace copy, and no secret either (exit 1 otherwise).

Measured at a load of 4 on the shared 2-core machine (--repeat 1), main at 2a8a279 → with chunked redaction:
log 15.3 → 27.7 MiB/s with 10 secrets, 4.3 → 17.2 MiB/s with 100; trace 57,000 → 77,000 records/s with 10
secrets, 36,000 → 97,000 with 100. Under a load of 17 to 20 the harness gets a fraction of a core, and the same
CPU time stretches to the ~3 MB/s first reported. What is left of the log's CPU is mostly the readiness pattern:
`regex` with a timeout costs about 5 µs a call here, per line, while a `log` readiness wait is pending.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets as token
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qa.harness.bot_process import BotUnderTest  # noqa: E402
from qa.harness.botfile import BotFile  # noqa: E402
from qa.harness.launch import Launch  # noqa: E402

LINE = b"flood: a bot that talks a lot before it is ready" + b"." * 50 + b"\n"  # 100 bytes
LOG_BOT = f"""
import sys, time
chunk = {LINE!r} * 10_486
out = sys.stdout.buffer
for _ in range({{mb}}):
    out.write(chunk)
out.write(b"leaked {{secret}} once\\nready\\n")
out.flush()
time.sleep(60)
"""
TRACE_BOT = """
import json, os, time
with open(os.environ["MATRIX_QA_TRACE_FILE"], "a", encoding="utf-8") as trace:
    for n in range({records}):
        trace.write(json.dumps({{"t": 1000.0 + n, "type": "bench.noise", "n": n, "note": "a record of a chatty bot"}})
                    + "\\n")
    trace.write(json.dumps({{"t": 0, "type": "bench.noise", "leak": "{secret}"}}) + "\\n")
    trace.write(json.dumps({{"t": 0, "type": "ready"}}) + "\\n")
time.sleep(60)
"""


async def once(tmp: Path, code: str, ready: dict[str, object], secrets: list[str]) -> tuple[float, float, BotUnderTest]:
    """(wall s from start to ready, harness CPU s, the bot) for one bot."""
    bot_file = BotFile(name="bench", command=[sys.executable, "-c", code], ready={**ready, "timeout": 600})
    env = {**os.environ, "MATRIX_QA_STATE_DIR": str(tmp / "state"), "MATRIX_QA_TRACE_FILE": str(tmp / "trace.jsonl")}
    bot = BotUnderTest(bot_file, Launch([sys.executable, "-c", code], env, tmp, None, None), tmp / "bot.log",
                       tmp / "trace.jsonl", tmp / "trace-copy.jsonl", secrets)
    began, cpu = time.perf_counter(), time.process_time()
    mark = await bot.start()
    await bot.wait_ready(600, mark)
    wall, used = time.perf_counter() - began, time.process_time() - cpu
    await bot.stop(timeout_s=5)
    return wall, used, bot


def check(tmp: Path, secret: str, log_bytes: int, records: int) -> list[str]:
    problems = []
    log = (tmp / "bot.log").read_bytes()
    if log_bytes and log.count(LINE) * len(LINE) != log_bytes:
        problems.append(f"bot.log holds {log.count(LINE) * len(LINE)} flood bytes, not {log_bytes}")
    copy = (tmp / "trace-copy.jsonl").read_bytes() if (tmp / "trace-copy.jsonl").exists() else b""
    if records and copy.count(b"bench.noise") != records + 1:
        problems.append(f"the trace copy holds {copy.count(b'bench.noise')} records, not {records + 1}")
    if secret.encode() in log or secret.encode() in copy:
        problems.append("a secret reached the artifacts")
    return problems


async def case(kind: str, size: int, n_secrets: int, repeat: int) -> tuple[float, float, list[str]]:
    best, best_cpu, problems = float("inf"), 0.0, []
    for _ in range(repeat):
        secrets = [token.token_urlsafe(18) for _ in range(n_secrets)]
        with tempfile.TemporaryDirectory(prefix="mqa-bench-output-") as tmp:
            if kind == "log":
                code, ready = LOG_BOT.format(mb=size, secret=secrets[-1]), {"log": "^ready$"}
            else:
                code, ready = TRACE_BOT.format(records=size, secret=secrets[-1]), {"trace": True}
            wall, cpu, _ = await once(Path(tmp), code, ready, secrets)
            problems += check(Path(tmp), secrets[-1], size * len(LINE) * 10_486 if kind == "log" else 0,
                              size if kind == "trace" else 0)
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, problems


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="MiB of output before the ready line")
    parser.add_argument("--records", type=int, default=100_000, help="trace records before the ready record")
    parser.add_argument("--secrets", type=int, nargs="+", default=[10, 100], help="sizes of the run's secret list")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest is shown")
    args = parser.parse_args()
    problems: list[str] = []
    for n in args.secrets:
        wall, cpu, found = await case("log", args.mb, n, args.repeat)
        problems += found
        print(f"log:   {args.mb} MiB in {wall:.2f} s = {args.mb / wall:.1f} MiB/s, harness CPU {cpu:.2f} s, "
              f"{n} secrets")
    for n in args.secrets:
        wall, cpu, found = await case("trace", args.records, n, args.repeat)
        problems += found
        print(f"trace: {args.records} records in {wall:.2f} s = {args.records / wall:,.0f} records/s, harness CPU "
              f"{cpu:.2f} s, {n} secrets")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
