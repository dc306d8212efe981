"""The fork server fills the holes its imports left in CPython's small-object pools before it forks, so a forked
bot's new objects do not copy the pages it shares with the server (qa.harness.heap_holes, issue 29)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from qa.harness import heap_holes

REPORT = b"""Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16           2             900           120
    1     32          10            5000             0
    3     64          40            9000           321

# arenas allocated total           =                   43
"""


def test_the_report_gives_the_free_blocks_of_each_size_class_that_has_some() -> None:
    assert heap_holes.free_blocks(REPORT) == {16: 120, 64: 321}
    assert heap_holes.free_blocks(b"") == {}
    assert heap_holes.free_blocks(b"no allocator report here\n1 2 3\n") == {}


@pytest.mark.parametrize("size", [16, 32, 48, 64, 256, 512])
def test_a_filler_takes_one_block_of_its_size_class(size: int) -> None:
    made = heap_holes.filler(size, 7)
    if isinstance(made, bytearray):  # its buffer is the block (the object is elsewhere)
        assert len(made) + 1 == size
    else:
        assert size - 16 < sys.getsizeof(made) <= size


# A parent with 4096 holes of 64 bytes spread over every page of 4 MiB of objects, the fork server's preload step,
# then a forked child that makes 4096 such objects and says how much private memory that cost it.
CHILD_COST = textwrap.dedent("""
    import os, sys
    from qa.harness import zygote

    def dirty_kb():
        for line in open("/proc/self/smaps_rollup"):
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])

    kept = [bytes(31) for _ in range(65536)]  # 64-byte blocks, 64 to a page
    del kept[::16]  # one block in 16 freed: four holes on every page
    zygote.preload_frozen([])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = dirty_kb()
        made = [bytes(31) for _ in range(4096)]
        os.write(w, str(dirty_kb() - before).encode())
        os._exit(0)
    os.close(w)
    print(os.read(r, 100).decode())
    os.waitpid(pid, 0)
""")


@pytest.mark.skipif(not hasattr(sys, "_debugmallocstats"), reason="CPython's allocator report")
def test_a_forked_childs_new_objects_go_to_fresh_pools_not_into_the_servers_shared_pages() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD_COST], capture_output=True, text=True, timeout=60, check=True)
    cost_kb = int(done.stdout.strip())
    # Packed, 4096 objects of 64 bytes are 256 KiB (plus the list that holds them); falling into the holes they
    # copied every one of the 1024 pages holding them: ~4 MiB.
    assert cost_kb < 1024, f"the child's 4096 new objects cost it {cost_kb} KiB of private memory"


def test_glibcs_report_gives_the_main_heaps_free_chunks() -> None:
    info = b"""<malloc version="1">
<heap nr="0">
<sizes>
  <size from="49" to="49" total="245" count="5"/>
  <size from="1537" to="1569" total="52450" count="34"/>
  <unsorted from="6113" to="6113" total="6113" count="1"/>
</sizes>
</heap>
<heap nr="1">
<sizes>
  <size from="81" to="81" total="810" count="10"/>
</sizes>
</heap>
</malloc>
"""
    assert heap_holes.free_chunks(info) == {48: 5, 1536: 34}
    assert heap_holes.free_chunks(b"") == {}


# The same for the C heap: 2048 free 1 KiB chunks between live ones over 4 MiB, then a child's 2048 mallocs.
MALLOC_CHILD_COST = textwrap.dedent("""
    import ctypes, os
    from qa.harness import zygote

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def dirty_kb():
        for line in open("/proc/self/smaps_rollup"):
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])

    chunks = [libc.malloc(1000) for _ in range(4096)]
    for p in chunks[::2]:
        libc.free(p)
    zygote.preload_frozen([])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = dirty_kb()
        made = [libc.malloc(1000) for _ in range(2048)]
        for p in made:
            ctypes.memset(p, 1, 1000)
        os.write(w, str(dirty_kb() - before).encode())
        os._exit(0)
    os.close(w)
    print(os.read(r, 100).decode())
    os.waitpid(pid, 0)
""")


@pytest.mark.skipif(not heap_holes.malloc_info(), reason="glibc's malloc_info")
def test_a_forked_childs_mallocs_go_past_the_servers_free_chunks() -> None:
    done = subprocess.run([sys.executable, "-c", MALLOC_CHILD_COST], capture_output=True, text=True, timeout=60,
                          check=True)
    cost_kb = int(done.stdout.strip())
    # 2048 chunks of 1 KiB written: 2 MiB wherever they are. Into the holes they copied the pages around them too
    # (every 4 KiB page holds two holes and two live chunks): ~4 MiB... unless packed past the heap's top.
    assert cost_kb < 3072, f"the child's 2048 mallocs cost it {cost_kb} KiB of private memory"
