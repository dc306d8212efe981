"""What processes a run started, seen from outside it: every process's command line and exec-time environment
(/proc/<pid>/environ), polled while the run lasts, so a test can say which held a secret and which are left."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from qa.provider.placeholders import run_localpart_suffix

T = TypeVar("T")
Snapshot = dict[int, tuple[str, bytes]]


def environs() -> Snapshot:
    """Every process's command line and exec-time environment that we may read (/proc/<pid>/environ)."""
    return with_parents()[0]


def with_parents() -> tuple[Snapshot, dict[int, int]]:
    """environs(), and pid -> parent pid read in the same pass: a process a bot starts (a `uname` its libraries run)
    inherits the bot's environment and may be gone by the next look, so its parent is read beside it."""
    found: Snapshot = {}
    parent: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found[int(proc.name)] = ((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"),
                                         (proc / "environ").read_bytes())
                parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                found.pop(int(proc.name), None)
                continue
    return found, parent


def started_by(pid: int, parent: dict[int, int], snapshot: Snapshot, mark: str) -> bool:
    """Whether `pid`, or a process it descends from, has `mark` in its command line (all within one look)."""
    seen: set[int] = set()
    while pid in snapshot and pid not in seen:
        if mark in snapshot[pid][0]:
            return True
        seen.add(pid)
        pid = parent.get(pid, 0)
    return False


async def watched(run: Awaitable[T]) -> tuple[T, list[Snapshot]]:
    """`run`'s result, and a snapshot of every process every 0.1 s while it ran (bounded by the run itself)."""
    result, looks = await watched_with_parents(run)
    return result, [snapshot for snapshot, _parent in looks]


async def watched_with_parents(run: Awaitable[T]) -> tuple[T, list[tuple[Snapshot, dict[int, int]]]]:
    """watched(), each look with its pid -> parent pid (with_parents): to tell a bot's own children from strangers."""
    task = asyncio.ensure_future(run)
    looks = []
    while not task.done():
        looks.append(with_parents())
        await asyncio.wait({task}, timeout=0.1)
    return task.result(), looks


def bot_processes(snapshots: list[Snapshot], run_id: str) -> dict[int, str]:
    """pid -> command line of every process seen with a bot account of run `run_id` in its environment (the
    launch contract's MATRIX_QA_USER_ID ends with the run's suffix: qa.scenario.runner)."""
    mark = f"-{run_localpart_suffix(run_id)}:".encode()
    return {pid: cmd for snap in snapshots for pid, (cmd, env) in snap.items()
            if any(line.startswith(b"MATRIX_QA_USER_ID=") and mark in line for line in env.split(b"\0"))}


def still_running(pids: dict[int, str]) -> list[str]:
    """Those of `pids` that are alive now (a zombie is not: it runs nothing and its parent reaps it)."""
    alive = []
    for pid, cmd in pids.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and Path(f"/proc/{pid}/environ").exists():
            alive.append(f"{pid} {cmd}")
    return alive
