"""A stream writer that keeps the transport's buffer short: frames in order, the rest waiting.

A link writes whole sealed frames, and a pipelined batch of large messages is a frame of many
MiB. Handed to asyncio's transport at once, whatever the kernel does not take at once goes into
the transport's one ``bytearray``, which in Python 3.11 is copied whole each time it grows
after its front was sent: a Driver sending 1,000 calls of 64 KiB spent 44% of its time in that
``extend`` (py-spy). Here at most ``WRITE_AHEAD`` bytes sit in the transport; the rest waits as
views of the frames (no copy) and goes in ``CHUNK`` pieces as the transport drains. Every frame
of the connection must go through one writer: frames are numbered when sealed, so one written
out of order would be refused by the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final

WRITE_AHEAD: Final = 1 << 20  # bytes the transport holds at most before more is handed to it
CHUNK: Final = 256 << 10  # a frame larger than this is handed over in pieces of this size


class PacedWriter:
    """Writes to ``writer`` in order, holding at most about ``WRITE_AHEAD`` bytes in its
    transport's buffer (the transport's own flow control wakes us when it drained)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._waiting: deque[memoryview] = deque()
        self._drainer: asyncio.Task[None] | None = None
        writer.transport.set_write_buffer_limits(high=WRITE_AHEAD)

    @property
    def backlog(self) -> int:
        """Bytes handed to this writer that wait here, not yet in the transport."""
        return sum(len(view) for view in self._waiting)

    def write(self, data: bytes) -> None:
        if not data:
            return
        transport = self.writer.transport
        if not self._waiting and transport.get_write_buffer_size() + len(data) <= WRITE_AHEAD:
            self.writer.write(data)  # the common case (small frames): no queue, no task
            return
        self._waiting.append(memoryview(data))
        self._fill()
        if self._waiting and self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    def _fill(self) -> None:
        transport = self.writer.transport
        if transport.is_closing():
            self._waiting.clear()  # the connection is going: what waited is resent after it
            return
        while self._waiting and transport.get_write_buffer_size() < WRITE_AHEAD:
            data = self._waiting[0]
            if len(data) > CHUNK:
                transport.write(data[:CHUNK])
                self._waiting[0] = data[CHUNK:]
            else:
                transport.write(data)
                self._waiting.popleft()

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self.writer.drain()  # returns once the buffer fell below its low mark
                self._fill()
        except (ConnectionError, OSError):
            self._waiting.clear()
        finally:
            self._drainer = None

    def close(self) -> None:
        self._waiting.clear()
        if self._drainer is not None:
            self._drainer.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
