"""A forked bot's stdout (qa.harness.fork_server.attach_stdout, qa.harness.pipe_reader): read whole, its pipe closed
at its end of file, on asyncio's loop and on uvloop alike (uvloop's connect_read_pipe kept the pipe open until the
loop closed, then closed its number twice)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from qa.harness.fork_server import ForkedProcess, attach_stdout
from qa.harness.pipe_reader import PipeReader

uvloop = pytest.importorskip("uvloop")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None, "uvloop": uvloop.new_event_loop}


def _run(loop: str, main: Callable[[], object]) -> object:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(main())  # type: ignore[arg-type]


def _same_pipe_open(fd: int, inode: int) -> bool:
    """Is `fd` still the pipe it was (not closed, and not a new descriptor that took its number)?"""
    try:
        return os.fstat(fd).st_ino == inode
    except OSError:
        return False


@pytest.mark.parametrize("loop", LOOPS)
def test_the_stdout_pipe_is_read_whole_and_closed_at_its_end(loop: str) -> None:
    async def main() -> tuple[bytes, bool]:
        r, w = os.pipe()
        inode = os.fstat(r).st_ino
        proc = await attach_stdout(ForkedProcess(1, asyncio.StreamReader()), r)
        os.write(w, b"ready\nline two\n")
        os.close(w)
        assert await proc.stdout.readline() == b"ready\n"
        rest = await proc.stdout.read()
        for _ in range(3):  # what the loop would do after the end of file (a transport's deferred close)
            await asyncio.sleep(0)
        return rest, _same_pipe_open(r, inode)

    rest, still_open = _run(loop, main)  # type: ignore[misc]
    assert rest == b"line two\n"
    assert not still_open


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_falls_behind_pauses_the_pipe_and_loses_nothing(loop: str) -> None:
    first, second = bytes(range(256)) * 128, b"after the pause\n"  # 32 KiB: within a pipe's buffer

    async def main() -> None:
        r, w = os.pipe()
        stream = asyncio.StreamReader(limit=4096)  # pauses past 8 KiB held
        reader = PipeReader(r, stream)
        os.write(w, first)
        async with asyncio.timeout(5):
            while not stream._paused:
                await asyncio.sleep(0)
        held = len(stream._buffer)
        os.write(w, second)
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(stream._buffer) == held  # paused: the pipe is not read while the stream holds too much
        os.close(w)
        assert await asyncio.wait_for(stream.read(), 5) == first + second  # reading resumed it; nothing lost
        assert reader.closed

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_ends_the_stream_once(loop: str) -> None:
    async def main() -> tuple[bytes, bool]:
        r, w = os.pipe()
        inode = os.fstat(r).st_ino
        stream = asyncio.StreamReader()
        reader = PipeReader(r, stream)
        reader.close()
        reader.close()
        os.close(w)
        return await stream.read(), _same_pipe_open(r, inode)

    assert _run(loop, main) == (b"", False)
