"""A forked bot's stdout (qa.harness.fork_server.attach_stdout, qa.harness.pipe_reader): read whole, its pipe closed
at its end of file, on asyncio's loop and on uvloop alike (uvloop's connect_read_pipe kept the pipe open until the
loop closed, then closed its number twice)."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import socket
import struct
import subprocess
import sys
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
        async with asyncio.timeout(5):  # a stream never ended fails here, not at the suite's timeout
            rest = await stream.read()
        still_open = _same_pipe_open(r, inode)
        # The loop watches no more: the next pipe on that number can be watched. (On uvloop a poll handle left
        # on the closed fd aborts the process when the loop closes; asyncio's case fails here first.)
        await _number_is_free(r)
        return rest, still_open

    assert _run(loop, main) == (b"", False)


# What each step leaves behind: the chunk a read takes, data after a first read, a read that fails, the loop's
# registration after the end (the fd's number is the next pipe's), pausing twice, a close while paused, a reader
# dropped while paused, and the same on descriptor 0 (a harness started with its stdin closed gets 0 for its first
# pipe).

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ names it; spelled out for the type checker's stubs)


class _Chunks(asyncio.StreamReader):
    """A StreamReader that remembers the size of each piece fed to it."""

    def __init__(self, limit: int = 2**16) -> None:
        super().__init__(limit=limit)
        self.sizes: list[int] = []

    def feed_data(self, data: bytes) -> None:
        self.sizes.append(len(data))
        super().feed_data(data)


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Yield to the loop until `condition` holds (it changes only when the loop runs a reader), bounded."""
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:g}s: {what}") from None


async def _paused(stream: asyncio.StreamReader) -> None:
    """Until the stream has asked its transport to pause (it holds more than twice its limit), bounded."""
    await _until(lambda: stream._paused, "the stream paused")


async def _number_is_free(fd: int) -> None:
    """The loop watches a new pipe that took `fd`'s number: a reader the loop still held for the old one would
    keep the new one from being watched (asyncio's selector and uvloop's poll handle both keep the stale entry)."""
    loop = asyncio.get_running_loop()
    ends = os.pipe()  # either end may have taken the number itself: move both out of the way first
    r, w = (fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 512) for end in ends)
    for end in ends:
        os.close(end)
    os.dup2(r, fd)  # the next pipe on that number, as the next bot's stdout may be
    os.close(r)
    try:
        seen = asyncio.Event()
        loop.add_reader(fd, seen.set)
        os.write(w, b"x")
        async with asyncio.timeout(5):
            await seen.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        os.close(w)


@pytest.mark.parametrize("loop", LOOPS)
def test_each_read_takes_one_default_pipe_buffer_at_most(loop: str) -> None:
    from qa.harness import pipe_reader

    async def main() -> list[int]:
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)  # room for more than one chunk at once
        stream = _Chunks(limit=1 << 20)  # never paused here
        data = bytes(range(256)) * (3 * 256 + 1)  # three 64 KiB chunks and 256 bytes
        os.write(w, data)
        os.close(w)
        PipeReader(r, stream)
        async with asyncio.timeout(5):
            assert await stream.read() == data
        return stream.sizes

    assert pipe_reader.CHUNK == 1 << 16, "one default pipe buffer (64 KiB) a read"
    sizes = _run(loop, main)
    assert sizes == [1 << 16, 1 << 16, 1 << 16, 256], sizes  # type: ignore[comparison-overlap]


@pytest.mark.parametrize("loop", LOOPS)
def test_what_comes_after_a_first_read_still_arrives(loop: str) -> None:
    async def main() -> None:
        r, w = os.pipe()
        stream = asyncio.StreamReader()
        reader = PipeReader(r, stream)
        assert not os.get_blocking(r), "a read never blocks the loop"
        assert not reader.closed and not reader.is_closing()
        reader._ready()  # a wakeup with nothing to read (epoll and libuv may give one): no end, no error
        assert not reader.closed and not stream.at_eof()
        async with asyncio.timeout(5):
            os.write(w, b"first\n")
            assert await stream.readline() == b"first\n"
            assert not reader.closed, "data is not an end"
            os.write(w, b"second\n")
            os.close(w)
            assert await stream.read() == b"second\n"
        assert reader.closed and reader.is_closing()
        reader.pause_reading()  # ended unpaused: its flow control has no fd to unwatch or watch again
        reader.resume_reading()
        await _number_is_free(r)

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_read_that_fails_ends_the_stream_with_its_error_and_frees_the_fd(loop: str) -> None:
    # A pipe's read cannot be made to fail; a TCP connection reset by its peer can, and is read the same way.
    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            accepted, _ = server.accept()
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            accepted.close()  # a reset, not an end of file
        fd = client.detach()
        stream = asyncio.StreamReader()
        reader = PipeReader(fd, stream)
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionResetError):
                await stream.read()
        assert reader.closed
        with pytest.raises(OSError):
            os.fstat(fd)
        await _number_is_free(fd)

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stream_paused_twice_holds_the_pipe_each_time(loop: str) -> None:
    chunk = bytes(range(256)) * 64  # 16 KiB: past twice the limit below, within a pipe's buffer

    async def held_while_paused(stream: asyncio.StreamReader, w: int) -> int:
        await _paused(stream)
        held = len(stream._buffer)
        os.write(w, b"more")
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(stream._buffer) == held, "paused: not read"
        return held

    async def main() -> None:
        r, w = os.pipe()
        stream = asyncio.StreamReader(limit=4096)
        reader = PipeReader(r, stream)
        os.write(w, chunk)
        held = await held_while_paused(stream, w)
        async with asyncio.timeout(5):
            got = await stream.readexactly(held)  # resumes the pipe
        os.write(w, chunk)
        await held_while_paused(stream, w)
        os.close(w)
        async with asyncio.timeout(5):
            got += await stream.read()
        assert got == chunk + b"more" + chunk + b"more"
        assert reader.closed
        await _number_is_free(r)

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_while_paused_ends_the_stream_and_watches_nothing_after(loop: str) -> None:
    async def main() -> None:
        r, w = os.pipe()
        inode = os.fstat(r).st_ino
        stream = asyncio.StreamReader(limit=4096)
        reader = PipeReader(r, stream)
        os.write(w, bytes(32 * 1024))
        await _paused(stream)
        held = len(stream._buffer)
        reader.close()  # as a bot's stop does to output nobody read
        assert reader.closed and not _same_pipe_open(r, inode)
        reader.pause_reading()  # a closed reader's flow control does nothing (no fd to watch or unwatch)
        reader.resume_reading()
        async with asyncio.timeout(5):
            assert len(await stream.read()) == held  # reading the rest resumes nothing
        await _number_is_free(r)
        os.close(w)

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_dropped_while_paused_closes_its_fd(loop: str) -> None:
    # Paused, the loop holds no reference to it: dropping the stream unread must not leak the pipe.
    async def main() -> tuple[int, int]:
        r, w = os.pipe()
        inode = os.fstat(r).st_ino
        stream = asyncio.StreamReader(limit=4096)
        PipeReader(r, stream)
        os.write(w, bytes(32 * 1024))
        await _paused(stream)
        del stream
        gc.collect()  # the stream and its reader refer to each other
        assert not _same_pipe_open(r, inode)
        return r, w

    _, w = _run(loop, main)  # type: ignore[misc]
    os.close(w)


FD_ZERO = """
import asyncio, gc, os, sys
from qa.harness.pipe_reader import PipeReader

async def main():
    loop = asyncio.get_running_loop()
    os.close(0)
    r, w = os.pipe()
    assert r == 0, r
    stream = asyncio.StreamReader(limit=4096)
    reader = PipeReader(r, stream)
    assert not reader.closed and not reader.is_closing()
    os.write(w, bytes(32 * 1024))
    async with asyncio.timeout(5):
        while not stream._paused:
            await asyncio.sleep(0)
        held = len(stream._buffer)
        os.write(w, b"more")
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(stream._buffer) == held, "paused on fd 0"
        os.close(w)
        assert len(await stream.read()) == 32 * 1024 + 4
    assert reader.closed and reader.is_closing()
    try:
        os.fstat(0)
    except OSError:
        pass
    else:
        raise AssertionError("fd 0 still open after its end")
    r, w = os.pipe()
    assert r == 0, r
    stream = asyncio.StreamReader()
    reader = PipeReader(r, stream)
    reader.close()
    async with asyncio.timeout(5):
        assert await stream.read() == b""
    assert reader.closed
    r, w2 = os.pipe()
    assert r == 0, r
    stream = asyncio.StreamReader(limit=4096)
    PipeReader(r, stream)
    os.write(w2, bytes(32 * 1024))
    async with asyncio.timeout(5):
        while not stream._paused:
            await asyncio.sleep(0)
    del stream
    gc.collect()
    try:
        os.fstat(0)
    except OSError:
        pass
    else:
        raise AssertionError("fd 0 still open after its reader was dropped")
    print("fd 0: ok")

factory = None
if sys.argv[1] == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_descriptor_0_is_a_pipe_like_any_other(loop: str) -> None:
    # In a child: the worker's own descriptor 0 is not ours to close (xdist may read it).
    done = subprocess.run([sys.executable, "-c", FD_ZERO, loop], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "fd 0: ok"), done.stderr[-2000:]
