"""A pipe's read end fed into an asyncio.StreamReader, the same on asyncio's loop and on uvloop: the read end of a
forked bot's stdout (qa.harness.fork_server), which no subprocess transport owns.

Why not `loop.connect_read_pipe`: on uvloop (0.23) its transport outlives the end of file (a StreamReaderProtocol
asks to keep it open, and uvloop holds every open handle until the loop closes), so each forked bot of a run
would leave its pipe open until the run ends; and when the transport finally closes, libuv closes the fd and
then the file object closes the same number again (uvloop issue 763): a second close() that takes whatever
descriptor was given that number meanwhile (a test user's socket, a pidfd). Here the fd is ours alone: read with
add_reader, closed exactly once, at the end of file, on either loop.
"""

from __future__ import annotations

import asyncio
import os

CHUNK = 1 << 16


class PipeReader:
    """Reads `fd` (a pipe's read end, taken over: closed here at its end) into `stream` on the running loop, with
    the stream's flow control: paused while it holds more than twice its limit, resumed when it is read."""

    def __init__(self, fd: int, stream: asyncio.StreamReader) -> None:
        self._fd = fd
        self._stream = stream
        self._loop = asyncio.get_running_loop()
        self._paused = False
        os.set_blocking(fd, False)
        stream.set_transport(self)  # type: ignore[arg-type]  # only pause_reading/resume_reading are called
        self._loop.add_reader(fd, self._ready)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _ready(self) -> None:
        try:
            data = os.read(self._fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # the pipe failed under us: an end, saying why
            self._close()
            self._stream.set_exception(exc)
            return
        if data:
            self._stream.feed_data(data)
            return
        self._close()
        self._stream.feed_eof()

    def _close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        if not self._paused:
            self._loop.remove_reader(fd)
        os.close(fd)

    def close(self) -> None:
        """Stop reading and close the fd (idempotent); the stream then ends as at end of file."""
        if self._fd >= 0:
            self._close()
            self._stream.feed_eof()

    # The part of a read transport StreamReader uses (feed_data pauses, a read resumes).
    def pause_reading(self) -> None:
        if self._fd >= 0 and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._fd >= 0 and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._ready)

    def is_closing(self) -> bool:
        return self._fd < 0

    def __del__(self) -> None:
        # Only reachable while paused (the loop holds a reader it polls): a stream dropped unread still closes.
        if self._fd >= 0:
            os.close(self._fd)
