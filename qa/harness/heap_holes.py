"""The fork server's heap made fork-friendly: the free blocks its imports left inside CPython's small-object pools
are filled before it forks, so a forked bot's new objects go to pools of their own.

Why (issue 29, a bot's ~20 MiB of private memory): CPython's allocator (pymalloc) gives a new small object the first
free block of a partly used pool of its size. After the preload, the fork server's pools hold ~10,000 such holes
(~1 MiB, left by the imports' temporaries), spread over pages every bot shares with the server; a bot's first
objects fell into them, and each one copied a whole shared 4 KiB page for a few bytes (copy-on-write). Filled
here, with objects the server keeps and never reads, the holes cost nothing more (their pages were already the
server's) and a bot's objects are packed into fresh pools: ~2 MiB less private memory per bot, ~1 MiB per lock probe
(bench/pss_breakdown.py, paired; the figures are in the commit that added this).

The holes are counted from `sys._debugmallocstats()` (CPython's own allocator report, written to stderr): on an
interpreter without it, or with pymalloc off (PYTHONMALLOC=malloc), nothing is filled.
"""

from __future__ import annotations

import os
import re
import sys

# One row of the report's size-class table: class, size, pools in use, blocks in use, free blocks in used pools.
_ROW = re.compile(rb"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", re.MULTILINE)
# A sane bound: the agent's server has ~1 MiB of holes; a bot file's preload a hundred times that would be odd, and
# filling is never worth more memory than this.
MAX_FILL_BYTES = 64 << 20
_fillers: list[object] = []  # kept for the server's life: a freed filler would be a hole again


def free_blocks(report: bytes) -> dict[int, int]:
    """Pure: {block size: free blocks in used pools} from a `sys._debugmallocstats()` report ({} if it has none)."""
    return {int(m.group(2)): int(m.group(5)) for m in _ROW.finditer(report) if int(m.group(5))}


def malloc_report() -> bytes:
    """`sys._debugmallocstats()`'s report (it writes to the C stderr, fd 2, which is borrowed for the moment); b""
    where there is none."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return b""
    sys.stderr.flush()
    held = os.memfd_create("mallocstats")
    saved = os.dup(2)
    try:
        os.dup2(held, 2)
        try:
            stats()
        finally:
            os.dup2(saved, 2)
        os.lseek(held, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(held, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(saved)
        os.close(held)


def filler(size: int, n: int) -> object:
    """An object whose allocation is one block of `size` bytes (a pymalloc size class: a multiple of 16 up to 512)."""
    if size >= 48:
        return bytes(size - 33)  # a bytes object's header is 33 bytes with its trailing NUL
    if size == 32:
        return (1 << 40) + n  # a two-digit int: 32 bytes (small ints are shared singletons, so never these)
    return bytearray(size - 1)  # its buffer is size bytes (the object itself, 56 bytes, lands in a 64-byte pool)


def fill_holes(rounds: int = 2) -> int:
    """Fill the free blocks of the used small-object pools; returns how many blocks were filled. Two rounds: the
    report's own parsing frees a few blocks after it was taken."""
    filled = spent = 0
    for _ in range(rounds):
        for size, count in sorted(free_blocks(malloc_report()).items()):
            count = min(count, (MAX_FILL_BYTES - spent) // size)
            _fillers.extend(filler(size, k) for k in range(count))
            filled += count
            spent += count * size
    return filled


def release() -> None:
    """Drop the fillers (a test's clean-up; the server never does)."""
    _fillers.clear()
