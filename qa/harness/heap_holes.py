"""The fork server's heap made fork-friendly: the free blocks its imports left inside CPython's small-object pools,
and the free chunks of the C heap, are filled before it forks, so a forked bot's new objects go to fresh memory.

Why (issue 29, a bot's ~20 MiB of private memory): CPython's allocator (pymalloc) gives a new small object the first
free block of a partly used pool of its size. After the preload, the fork server's pools hold ~10,000 such holes
(~1 MiB, left by the imports' temporaries), spread over pages every bot shares with the server; a bot's first
objects fell into them, and each one copied a whole shared 4 KiB page for a few bytes (copy-on-write). glibc's
malloc does the same with its ~500 free chunks (~0.9 MiB: larger objects, dict tables, the C libraries' own).
Filled here, with allocations the server keeps and never reads, the holes cost nothing more (their pages were
already the server's) and a bot's objects are packed into fresh pages (bench/pss_breakdown.py, paired, fast: a
bot's own peak private memory 20.7 -> 18.4 MiB with the pools filled, 17.8 with the C heap too; a lock probe's
5.2 -> 4.0 -> 3.7).

The holes are counted from CPython's and glibc's own allocator reports (`sys._debugmallocstats()`, written to
stderr; `malloc_info()`): on an interpreter without the first, with pymalloc off (PYTHONMALLOC=malloc), or on
another C library, that part fills nothing.
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


_FREE_CHUNKS = re.compile(rb'<size from="(\d+)" to="\d+" total="\d+" count="(\d+)"/>')


def free_chunks(info: bytes) -> dict[int, int]:
    """Pure: {chunk size: free chunks} of the main heap from glibc's malloc_info() XML (its first <heap>)."""
    main = info.split(b"</heap>", 1)[0]
    found: dict[int, int] = {}
    for size, count in _FREE_CHUNKS.findall(main):
        chunk = int(size) & ~15  # a bin's bound may carry the chunk's flag bit
        found[chunk] = found.get(chunk, 0) + int(count)
    return found


def malloc_info() -> bytes:
    """glibc's malloc_info() report (b"" on another C library)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        memstream, report, close, free = libc.open_memstream, libc.malloc_info, libc.fclose, libc.free
    except (OSError, AttributeError):
        return b""
    memstream.restype = ctypes.c_void_p
    buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        return b""
    report(0, ctypes.c_void_p(stream))
    close(ctypes.c_void_p(stream))
    try:
        return ctypes.string_at(buffer, size.value)
    finally:
        free(buffer)


def fill_malloc_holes(rounds: int = 2) -> int:
    """The same for the C heap (glibc): its free chunks taken by allocations never freed; returns how many."""
    import ctypes

    filled = spent = 0
    for _ in range(rounds):
        chunks = free_chunks(malloc_info())
        if not chunks:
            break
        malloc = ctypes.CDLL(None).malloc
        malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        for chunk, count in sorted(chunks.items()):
            count = min(count, (MAX_FILL_BYTES - spent) // max(chunk, 1))
            for _ in range(count):
                malloc(max(chunk - 8, 24))  # a chunk of this size: the request plus its 8-byte header
            filled += count
            spent += count * chunk
    return filled


def release() -> None:
    """Drop the fillers (a test's clean-up; the server never does)."""
    _fillers.clear()
