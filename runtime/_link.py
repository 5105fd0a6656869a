"""The asyncio side of connections: an outgoing link to one peer, and helpers both directions use.

A link connects to a peer by name (looked up in the registry each time, since the peer's address
changes when it restarts), runs the handshake, and tells its owner (the node) when it opened
and what it was acknowledged; the owner's coordinator decides what to resend. Nothing here
decides anything about exactly-once: it moves bytes and notices silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, Final, Protocol

from ._home import Home, InstanceRecord
from ._paced import PacedWriter
from ._protocol import Closed, Connection, Event, Opened, Received
from ._schema import PING, PeerMessage, read_ack

FIRST_DELAY: Final = 0.05  # seconds before the first reconnection attempt; doubles after

HANDSHAKE_SECONDS: Final = 5.0  # an accepted connection must finish the handshake in this time
MAX_UNAUTHENTICATED: Final = 64  # accepted connections still in the handshake, at most


class LinkOwner(Protocol):
    """What a link needs from the node that owns it."""

    name: str
    epoch: int
    secret: bytes
    home: Home
    stopping: bool

    @property
    def config(self) -> Any: ...

    def durable_from(self, peer: str) -> int: ...

    def link_opened(self, peer: str, last: int) -> None: ...

    def ack_received(self, peer: str, upto: int) -> None: ...

    def log(self, message: str) -> None: ...


class Link:
    """The outgoing connection to one peer: connects (again) by name, reports what opened."""

    def __init__(self, owner: LinkOwner, peer: str) -> None:
        self.owner = owner
        self.peer = peer
        self._writer: PacedWriter | None = None
        self._conn: Connection | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, messages: list[PeerMessage]) -> None:
        """Write now if open; otherwise the messages wait in the outbox for the next handshake."""
        if self._writer is not None and self._conn is not None:
            self._writer.write(self._conn.send_messages(messages))

    async def _run(self) -> None:
        owner = self.owner
        delay = FIRST_DELAY
        while not owner.stopping:
            record = owner.home.lookup(self.peer)
            debug(f"{owner.name}: link to {self.peer}: looking up -> {record and record.address}")
            if record is None:
                delay = await self._wait_for_news(record, delay)
                continue
            try:
                reader, writer = await asyncio.open_connection(record.host, record.port)
            except OSError as exc:
                debug(f"{owner.name}: link to {self.peer}: connect failed: {exc}")
                delay = await self._wait_for_news(record, delay)
                continue
            conn = Connection(
                me=owner.name,
                epoch=owner.epoch,
                secret=owner.secret,
                initiator=True,
                last_from=owner.durable_from,
            )
            paced = PacedWriter(writer)  # every frame of this connection goes through it
            paced.write(conn.start())
            try:
                await self._serve(conn, reader, paced)
                delay = FIRST_DELAY
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the link: log it, reconnect
                owner.log(f"{owner.name}: link to {self.peer} failed: {exc!r}; reconnecting")
            finally:
                self._writer = None
                self._conn = None
                paced.close()
            delay = await self._wait_for_news(record, delay)

    async def _wait_for_news(self, seen: InstanceRecord | None, delay: float) -> float:
        """Wait up to ``delay`` before the next attempt, less if the peer registers anew (a
        restart, a standby taking over: ``Registry.watch``); the next delay (the backoff
        starts over when the peer moved)."""
        owner = self.owner
        record = await owner.home.registry.watch(self.peer, seen, delay)
        if record != seen:
            return FIRST_DELAY
        return min(delay * 2, float(owner.config.reconnect_max_delay))

    async def _serve(
        self, conn: Connection, reader: asyncio.StreamReader, writer: PacedWriter
    ) -> None:
        beat = self.owner.config.heartbeat_seconds

        def on_quiet(periods: int) -> None:
            if periods >= 3:
                writer.close()  # the pending read ends; _run reconnects
            elif self._conn is not None:
                writer.write(conn.send(PING))

        watch = QuietWatch(beat, on_quiet)
        try:
            await self._read_events(conn, reader, writer, watch)
        finally:
            watch.cancel()
        if watch.quiet >= 3:
            self.owner.log(
                f"{self.owner.name}: {self.peer} silent for {3 * beat:.0f} s; reconnecting"
            )

    async def _read_events(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: PacedWriter,
        watch: QuietWatch,
    ) -> None:
        owner = self.owner
        while True:
            events = await receive(conn, reader, writer, watch)
            if events is None:
                debug(f"{owner.name}: link to {self.peer}: closed")
                return
            for event in events:
                if isinstance(event, Opened):
                    if event.peer != self.peer:
                        writer.write(
                            conn.send_error(f"expected {self.peer!r}, reached {event.peer!r}")
                        )
                        return
                    self._conn, self._writer = conn, writer
                    debug(f"{owner.name}: link to {self.peer} open (it has {event.last})")
                    owner.link_opened(self.peer, event.last)
                elif isinstance(event, Received):
                    if event.message["t"] == "ack":
                        upto = read_ack(event.message)
                        if upto is not None:
                            owner.ack_received(self.peer, upto)
                elif isinstance(event, Closed):
                    owner.log(f"{owner.name}: link to {self.peer} closed: {event.reason}")
                    return

    def close(self) -> None:
        self._task.cancel()
        if self._writer is not None:
            self._writer.close()


class QuietWatch:
    """Notices a connection on which nothing has arrived for a while.

    One timer per connection, ticking every ``period``, instead of a timeout around every read:
    a read only sets a flag. ``on_quiet(n)`` is called at the end of the n-th period in a row
    with nothing heard, so silence is noticed between one and two periods after it began.
    """

    def __init__(self, period: float, on_quiet: Callable[[int], None]) -> None:
        self.heard = False
        self.quiet = 0
        self._period = period
        self._on_quiet = on_quiet
        self._handle = asyncio.get_running_loop().call_later(period, self._tick)

    def _tick(self) -> None:
        if self.heard:
            self.heard, self.quiet = False, 0
        else:
            self.quiet += 1
            self._on_quiet(self.quiet)
        self._handle = asyncio.get_running_loop().call_later(self._period, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


class Writes(Protocol):
    """Where a connection's answers go: a stream writer, or a link's paced one."""

    def write(self, data: bytes) -> None: ...


READ_BYTES: Final = 1 << 20  # read at most this at a time (a pipelined batch is many MiB)


async def receive(
    conn: Connection,
    reader: asyncio.StreamReader,
    writer: Writes,
    watch: QuietWatch | None,
) -> list[Event] | None:
    """Read what arrives, feed it to the protocol, send its answer; None when the peer closed."""
    data = await reader.read(READ_BYTES)
    if not data:
        return None
    if watch is not None:
        watch.heard = True
    events, reply = conn.receive_data(data)
    if reply:
        writer.write(reply)
    return events


class Accepted:
    """An accepted connection as the node's actions name it (an outside caller to answer, a
    peer to acknowledge): its stream and its protocol, which seals and numbers every message
    after the handshake."""

    __slots__ = ("conn", "writer")

    def __init__(self, writer: asyncio.StreamWriter, conn: Connection) -> None:
        self.writer = writer
        self.conn = conn

    def write(self, message: Any) -> None:
        """Write one message, sealed; a connection already gone (or closed by the protocol) is
        ignored."""
        with contextlib.suppress(Exception):
            self.writer.write(self.conn.send(message))


class HandshakeGate:
    """Bounds the accepted connections that have not finished the handshake.

    Each one gets ``seconds`` from its accept to finish, and at most ``limit`` wait at once: a
    new connection beyond that closes the oldest waiting one (which had the most time), so a
    flood of idle connections holds neither file descriptors nor the door against honest
    callers, whose handshake takes a round trip. What is closed is logged as one summary line
    at most once a second.
    """

    def __init__(
        self,
        log: Callable[[str], None],
        *,
        limit: int = MAX_UNAUTHENTICATED,
        seconds: float = HANDSHAKE_SECONDS,
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self._log = log
        self._waiting: dict[asyncio.StreamWriter, asyncio.TimerHandle] = {}  # oldest first
        self._expired = 0
        self._crowded = 0
        self._next_report = 0.0
        self._report_handle: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, writer: asyncio.StreamWriter) -> None:
        """A connection was accepted: its handshake clock starts now."""
        loop = asyncio.get_running_loop()
        while len(self._waiting) >= self.limit:
            self._close(next(iter(self._waiting)))
            self._crowded += 1
            self._report()
        self._waiting[writer] = loop.call_later(self.seconds, self._expire, writer)

    def done(self, writer: asyncio.StreamWriter) -> None:
        """The connection finished its handshake, or ended."""
        handle = self._waiting.pop(writer, None)
        if handle is not None:
            handle.cancel()

    def _expire(self, writer: asyncio.StreamWriter) -> None:
        if writer in self._waiting:
            self._close(writer)
            self._expired += 1
            self._report()

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._waiting.pop(writer).cancel()
        with contextlib.suppress(Exception):
            writer.close()  # its pending read ends, and so does its accept task

    def _report(self) -> None:
        if self._report_handle is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._next_report - loop.time()
        if wait <= 0:
            self._flush()
        else:
            self._report_handle = loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        self._report_handle = None
        counts = []
        if self._expired:
            counts.append(f"{self._expired} past the {self.seconds:g} s handshake deadline")
        if self._crowded:
            counts.append(f"{self._crowded} over the cap of {self.limit} unauthenticated")
        self._expired = self._crowded = 0
        if counts:
            self._log(f"closed connections that did not finish the handshake: {', '.join(counts)}")
        self._next_report = asyncio.get_running_loop().time() + 1.0


_DEBUG = bool(os.environ.get("IMMORTALS_DEBUG"))


def debug(message: str) -> None:
    """Connection-level detail, only with IMMORTALS_DEBUG=1 (what a person debugging links needs)."""
    if _DEBUG:
        print(f"debug: {message}", file=sys.stderr, flush=True)
