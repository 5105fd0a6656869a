"""A running instance: recovery, group commit, release of effects, and its network links.

The one rule: **execute, then log, then release.** Inputs are executed the moment they arrive
(state moves on at once); their step records queue up and are appended as one frame with one
fsync while the next inputs execute (pipelining); only when a batch is durable are its outgoing
messages sent, its emits printed, its outside callers answered and its inputs acknowledged. A
crash before the fsync loses nothing anyone has seen: senders still hold the unacknowledged
inputs and send them again.

The asyncio parts here only move bytes and schedule; decisions live in the sans-IO modules:
``_executor`` (what a step does), ``_streams`` (exactly-once bookkeeping), ``_protocol``
(handshake and messages).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from logformat import (
    LogLockedError,
    LogMeta,
    LogReader,
    LogWriter,
    pack_state,
    seal_checkpoint,
)

from . import _faults as faults
from ._apps import LoadedApp
from ._errors import InstanceError
from ._executor import Executor, Sources
from ._home import Home, InstanceRecord
from ._protocol import Closed, Connection, Event, Opened, Received
from ._streams import Streams

CHECKPOINT_FORMAT = 1
PIPELINE_SLICE = 64  # messages executed between two looks at the log thread
ACK_DELAY = 0.005  # seconds an acknowledgement may wait to be sent together with later ones
INLINE_BATCH = 4  # batches of at most this many steps are made durable on the event loop


@dataclass(slots=True)
class NodeConfig:
    """How an instance runs. Defaults suit production; tests shrink the intervals."""

    host: str = "127.0.0.1"
    port: int = 0
    durable: bool = True
    checkpoint_bytes: int = 64 * 1024 * 1024
    checkpoint_seconds: float = 60.0
    quiescence_timeout: float = 5.0
    max_batch: int = 4096
    allow_pickle: bool = False
    emit_stream: IO[str] | None = None
    emit_tagged: bool = False
    reconnect_max_delay: float = 1.0
    heartbeat_seconds: float = 1.0
    sources: Sources | None = None


@dataclass(frozen=True, slots=True)
class StartupReport:
    name: str
    address: str
    epoch: int
    checkpoint_lsn: int | None
    replayed: int
    seconds: float
    skipped_checkpoints: list[str] = field(default_factory=list)

    def line(self) -> str:
        ckpt = (
            f"checkpoint at LSN {self.checkpoint_lsn}" if self.checkpoint_lsn else "no checkpoint"
        )
        return (
            f"{self.name} serving on {self.address} (epoch {self.epoch}); {ckpt}; "
            f"replayed {self.replayed} steps; recovered in {self.seconds * 1000:.1f} ms"
        )


@dataclass(slots=True)
class _Batch:
    records: list[dict[str, Any]]
    first_lsn: int
    checkpoint: tuple[int, bytes] | None = None  # (state codec, packed state), sealed off-loop


class Node:
    """One instance of an app, live."""

    def __init__(
        self, app: LoadedApp, *, name: str, home: Home, config: NodeConfig | None = None
    ) -> None:
        self.app = app
        self.name = name
        self.home = home
        self.config = config or NodeConfig()
        self.executor = Executor(app.cls, name=name, sources=self.config.sources)
        self.streams = Streams()
        self.epoch = 0
        self.next_lsn = 1
        self.durable_lsn = 0
        self._writer: LogWriter | None = None
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="log")
        self._pending: list[dict[str, Any]] = []
        self._inflight: asyncio.Future[Any] | None = None
        self._held: deque[dict[str, Any]] = deque()
        self._held_upto: dict[str, int] = {}
        self._waiters: dict[Any, list[asyncio.StreamWriter]] = {}
        self._result_lsn: dict[Any, int] = {}
        self._durable_in: dict[str, int] = {}  # per peer: highest number durably logged
        self._links: dict[str, _Link] = {}
        self._incoming: dict[str, asyncio.StreamWriter] = {}
        self._acks_due: dict[str, int] = {}
        self._ack_timer: asyncio.TimerHandle | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._server: asyncio.Server | None = None
        self._released_fd = -1
        self._released_lsn = 0
        self._bytes_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._last_checkpoint_warning = 0.0
        self._time_due = False  # checkpoint_seconds have passed since the last checkpoint
        self._clock_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        self.address = ""
        self._secret = b""
        self.log = _stderr_log

    # -- start and recovery ---------------------------------------------------------------------

    async def start(self) -> StartupReport:
        started = time.perf_counter()
        self._secret = self.home.secret()
        self.epoch = self.home.next_epoch(self.name)
        checkpoint_lsn: int | None = None
        replayed = 0
        skipped: list[str] = []
        if self.config.durable:
            checkpoint_lsn, replayed, skipped = self._recover()
        self._restart_checkpoint_clock()
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port)
        sock = self._server.sockets[0].getsockname()
        self.address = f"{sock[0]}:{sock[1]}"
        self.home.register(
            InstanceRecord(
                self.name,
                sock[0],
                sock[1],
                self.epoch,
                str(self.home.log_dir(self.name)),
                self.app.spec,
                self.app.code_version,
                os.getpid(),
                time.time(),
            )
        )
        self._release_recovered()
        for tid, due in self.executor.timers.items():
            self._schedule_timer(tid, due)
        for peer in self.streams.peers():
            if self.streams.unacknowledged(peer):
                self._link(peer)
        if not self.executor.started:
            self.submit({"k": "start"})
        return StartupReport(
            self.name,
            self.address,
            self.epoch,
            checkpoint_lsn,
            replayed,
            time.perf_counter() - started,
            skipped,
        )

    def _recover(self) -> tuple[int | None, int, list[str]]:
        log_dir = self.home.log_dir(self.name)
        try:
            self._writer = LogWriter.open(
                log_dir,
                epoch=self.epoch,
                create=LogMeta(self.name, self.app.spec, self.app.code_version),
                fault_hook=faults.hit if faults.armed("mid-frame", "mid-checkpoint") else None,
            )
        except LogLockedError:
            running = self.home.lookup(self.name)
            where = f" (pid {running.pid} at {running.address})" if running else ""
            raise InstanceError(f"instance {self.name!r} is already running{where}") from None
        self._writer.record_code_version(self.app.spec, self.app.code_version)
        checkpoint_lsn: int | None = None
        skipped: list[str] = []
        with LogReader(log_dir) as reader:
            found = reader.newest_checkpoint(allow_pickle=self.config.allow_pickle)
            if found is not None:
                checkpoint_lsn, snap, errors = found
                skipped = [str(e) for e in errors]
                self.executor.restore(snap["exec"])
                self.streams.restore(snap["streams"])
            start = (checkpoint_lsn or 0) + 1
            replayed = 0
            for rec in reader.records(start):
                self.executor.execute(rec.value["in"], lsn=rec.lsn, recorded=rec.value)
                self.streams.apply(rec.value)
                replayed += 1
            self.next_lsn = reader.last_lsn + 1
        self.durable_lsn = self.next_lsn - 1
        self._durable_in = dict(self.streams.seq_in)
        self._released_fd = os.open(log_dir / "released", os.O_RDWR | os.O_CREAT, 0o644)
        raw = os.pread(self._released_fd, 8, 0)
        self._released_lsn = int.from_bytes(raw, "little") if len(raw) == 8 else 0
        return checkpoint_lsn, replayed, skipped

    def _release_recovered(self) -> None:
        """Emits of steps made durable before the crash but perhaps never printed: print them.

        The ``released`` file records the last LSN whose emits were printed; it is written after
        printing without fsync, so after a crash between the two a line may print twice, which
        ``--emit-tagged`` output (LSN and index per line) lets a consumer drop.
        """
        if self._writer is None or self._released_lsn >= self.durable_lsn:
            return
        with LogReader(self._writer.path) as reader:
            for rec in reader.records(self._released_lsn + 1, self.durable_lsn):
                self._print_emits(rec.lsn, rec.value.get("emit", ()))
        self._mark_released(self.durable_lsn)

    # -- inputs ------------------------------------------------------------------------------------

    def submit(self, inp: dict[str, Any]) -> None:
        """Execute one input now (or hold it while draining for a checkpoint)."""
        if inp["k"] in ("call", "start") and (self._held or self._draining):
            self._held.append(inp)
            if inp.get("from") is not None:
                self._held_upto[inp["from"]] = inp["seq"]
            return
        lsn = self.next_lsn
        record = self.executor.execute(inp, lsn=lsn)
        self._account(record, lsn)
        self._kick()

    def _account(self, record: dict[str, Any], lsn: int) -> None:
        self.next_lsn = lsn + 1
        self.streams.apply(record)
        for key, _ok, _value in record.get("rep", ()):
            self._result_lsn[key] = lsn
        for tid, due in record.get("tim", ()):
            self._schedule_timer(tid, due)
        self._pending.append(record)

    @property
    def _draining(self) -> bool:
        return self._checkpoint_due() and not self.executor.quiescent and self._drain_allowed()

    def _drain_allowed(self) -> bool:
        overdue = time.monotonic() - self._last_checkpoint - self.config.checkpoint_seconds
        return overdue < self.config.quiescence_timeout

    def _checkpoint_due(self) -> bool:
        if not self.config.durable:
            return False
        return self._bytes_since_checkpoint >= self.config.checkpoint_bytes or self._time_due

    def _restart_checkpoint_clock(self) -> None:
        """The next checkpoint is due ``checkpoint_seconds`` from now.

        A timer sets a flag, rather than every input reading the clock (that showed in
        profiles: the question is asked once per input).
        """
        self._last_checkpoint = time.monotonic()
        self._time_due = False
        if self._clock_handle is not None:
            self._clock_handle.cancel()
        self._clock_handle = asyncio.get_running_loop().call_later(
            self.config.checkpoint_seconds, self._checkpoint_time_reached
        )

    def _checkpoint_time_reached(self) -> None:
        self._clock_handle = None
        self._time_due = True

    # -- group commit ----------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._inflight is not None or not self._pending:
            return
        records, self._pending = self._pending, []
        batch = _Batch(records, self.next_lsn - len(records))
        if self._checkpoint_due():
            if self.executor.quiescent:
                batch.checkpoint = self._snapshot_bytes(self.next_lsn - 1)
            elif not self._drain_allowed():
                self._warn_no_checkpoint()
        loop = asyncio.get_running_loop()
        if len(records) <= INLINE_BATCH and batch.checkpoint is None:
            # A small batch (ping-pong traffic): handing it to the log thread and back costs more
            # than its fsync, and there is little to overlap with. Write it here.
            done: asyncio.Future[Any] = loop.create_future()
            try:
                done.set_result(self._append(batch))
            except Exception as exc:
                done.set_exception(exc)
            self._inflight = done
            loop.call_soon(self._on_durable, batch, done)
            return
        self._inflight = loop.run_in_executor(self._io, self._append, batch)
        self._inflight.add_done_callback(lambda fut: self._on_durable(batch, fut))

    def _append(self, batch: _Batch) -> int:
        """Runs on the log thread: one write + one fsync for the whole batch."""
        faults.hit("before-fsync")
        written = 0
        if self._writer is not None:
            start = self._writer.next_lsn
            if start != batch.first_lsn:
                raise RuntimeError(f"log at LSN {start}, batch starts at {batch.first_lsn}")
            before = self._writer._offset
            self._writer.append(batch.records)
            written = self._writer._offset - before
            if batch.checkpoint is not None:
                lsn = batch.first_lsn + len(batch.records) - 1
                codec, packed = batch.checkpoint
                self._writer.write_checkpoint_bytes(lsn, seal_checkpoint(lsn, codec, packed))
        return max(written, 0)

    def _snapshot_bytes(self, lsn: int) -> tuple[int, bytes] | None:
        snap = {
            "format": CHECKPOINT_FORMAT,
            "exec": self.executor.snapshot(),
            "streams": self.streams.snapshot(),
        }
        try:
            return pack_state(snap, use_pickle=self.config.allow_pickle)
        except Exception as exc:  # unstorable state: keep serving, keep the log, say why
            self.log(f"{self.name}: checkpoint at LSN {lsn} skipped: {exc}")
            self._restart_checkpoint_clock()
            return None

    def _warn_no_checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._last_checkpoint_warning > 60:
            self._last_checkpoint_warning = now
            self.log(
                f"{self.name}: no checkpoint for {now - self._last_checkpoint:.0f} s: a handler stays "
                "suspended mid-await (a main() that never returns?). Recovery replays from the last "
                "checkpoint; continue long work by posting to self or with self.sleep() instead"
            )

    def _on_durable(self, batch: _Batch, fut: asyncio.Future[Any]) -> None:
        self._inflight = None
        exc = fut.exception()
        if exc is not None:
            self.log(f"{self.name}: appending to the log failed, stopping: {exc!r}")
            self._stopping = True
            os._exit(70)  # nothing after this batch may be released; recovery redoes it
        written = fut.result()
        faults.hit("after-fsync")
        last = batch.first_lsn + len(batch.records) - 1
        self.durable_lsn = last
        self._bytes_since_checkpoint += written
        if batch.checkpoint is not None:
            self._bytes_since_checkpoint = 0
            self._restart_checkpoint_clock()
        self._release(batch)
        self._release_held()
        self._kick()

    def _release_held(self) -> None:
        while self._held and not self._draining:
            inp = self._held.popleft()
            lsn = self.next_lsn
            record = self.executor.execute(inp, lsn=lsn)
            self._account(record, lsn)
        if not self._held:
            self._held_upto.clear()

    # -- release -----------------------------------------------------------------------------------

    def _release(self, batch: _Batch) -> None:
        acks: dict[str, int] = {}
        per_peer: dict[str, list[list[Any]]] = {}
        lsn = batch.first_lsn
        for record in batch.records:
            inp = record["in"]
            if inp.get("from") is not None:
                acks[inp["from"]] = max(acks.get(inp["from"], 0), inp["seq"])
            for message in record.get("out", ()):
                per_peer.setdefault(message[0], []).append(message)
            self._print_emits(lsn, record.get("emit", ()))
            for key, ok, value in record.get("rep", ()):
                self._answer(key, ok, value)
            lsn += 1
        self._mark_released(lsn - 1)
        for peer, upto in acks.items():
            self._durable_in[peer] = max(self._durable_in.get(peer, 0), upto)
        for peer, messages in per_peer.items():
            self._link(peer).send(messages)
        if per_peer:
            faults.hit("after-send")
        if acks:
            self._acks_due.update(acks)
            if self._ack_timer is None:
                loop = asyncio.get_running_loop()
                self._ack_timer = loop.call_later(ACK_DELAY, self._send_acks)

    def _send_acks(self) -> None:
        """Acknowledge, in one message per peer, everything made durable in the last moments.

        An ack only lets the sender forget messages it keeps for resending, so it can wait a
        little: one per peer every ACK_DELAY instead of one per batch saves a send and a wake-up
        per call in ping-pong traffic.
        """
        self._ack_timer = None
        acks, self._acks_due = self._acks_due, {}
        for peer, upto in acks.items():
            writer = self._incoming.get(peer)
            if writer is not None:
                _write(writer, {"t": "ack", "upto": upto})

    def _print_emits(self, lsn: int, emits: Any) -> None:
        stream = self.config.emit_stream or sys.stdout
        for index, value in enumerate(emits):
            shown = {"lsn": lsn, "i": index, "value": value} if self.config.emit_tagged else value
            stream.write(json.dumps(shown, default=_jsonable) + "\n")
        if emits:
            stream.flush()

    def _mark_released(self, lsn: int) -> None:
        if self._released_fd >= 0 and lsn > self._released_lsn:
            os.pwrite(self._released_fd, lsn.to_bytes(8, "little"), 0)
        self._released_lsn = max(self._released_lsn, lsn)

    def _answer(self, key: Any, ok: bool, value: Any) -> None:
        if key == "main":
            if not ok:
                self.log(f"{self.name}: main() raised {value[0]}: {value[1]}")
            return
        for writer in self._waiters.pop(key, ()):
            _write(writer, {"t": "result", "id": key, "ok": ok, "v": value})

    # -- outside callers -------------------------------------------------------------------------

    def durable_from(self, peer: str) -> int:
        """The highest number from ``peer`` whose step is durable: what a handshake may promise.

        Not ``streams.seq_in``, which counts messages executed but perhaps not yet logged: a peer
        told that number would forget messages a crash before the fsync would then lose.
        """
        return self._durable_in.get(peer, 0)

    def _admit_call(self, inp: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        key = inp["id"]
        known = self.streams.known_result(key)
        if known is not None and self._result_lsn.get(key, 0) <= self.durable_lsn:
            _write(writer, {"t": "result", "id": key, "ok": known[0], "v": known[1]})
            return
        self._waiters.setdefault(key, []).append(writer)
        if known is None and key not in self.streams.running and len(self._waiters[key]) == 1:
            self.submit(inp)

    # -- timers ----------------------------------------------------------------------------------

    def _schedule_timer(self, tid: int, due: float) -> None:
        if tid in self._timers:
            return
        delay = max(0.0, due - time.time())
        loop = asyncio.get_running_loop()
        self._timers[tid] = loop.call_later(delay, self._fire_timer, tid)

    def _fire_timer(self, tid: int) -> None:
        self._timers.pop(tid, None)
        if tid in self.executor.timers:
            self.submit({"k": "timer", "tid": tid})

    # -- connections -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One incoming connection: a peer's link (its messages to us) or an outside caller."""
        conn = Connection(
            me=self.name,
            epoch=self.epoch,
            secret=self._secret,
            initiator=False,
            last_from=self.durable_from,
        )
        peer: str | None = None
        who = "an unidentified peer"
        silence = 3 * self.config.heartbeat_seconds  # a live peer's link pings more often
        watch: _QuietWatch | None = None
        try:
            while True:
                events = await _receive(conn, reader, writer, watch)
                if events is None:
                    if watch is not None and watch.quiet:
                        self.log(
                            f"{self.name}: {who} went silent for {silence:.0f} s; "
                            "dropped its connection"
                        )
                    return
                for event in events:
                    if isinstance(event, Opened):
                        refusal = self._refuse_peer(event)
                        if refusal is not None:
                            writer.write(conn.send_error(refusal))
                            self.log(f"{self.name}: refused a connection: {refusal}")
                            return
                        peer = event.peer
                        who = peer or "an outside caller"
                        _debug(f"{self.name}: accepted {who} (it has {event.last})")
                        if peer is not None:
                            self._incoming[peer] = writer
                            self._link(peer).acknowledged(event.last)
                            watch = _QuietWatch(silence, lambda quiet: writer.close())
                    elif isinstance(event, Received):
                        if not await self._on_message(peer, event.message, writer):
                            why = "sequence gap; reconnect to resend"
                            writer.write(conn.send_error(why))
                            self.log(f"{self.name}: dropped the connection from {who}: {why}")
                            return
                    elif isinstance(event, Closed):
                        self.log(f"{self.name}: dropped a connection from {who}: {event.reason}")
                        return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # a cancelled accept task at shutdown ends quietly
        finally:
            if watch is not None:
                watch.cancel()
            if peer is not None and self._incoming.get(peer) is writer:
                del self._incoming[peer]
            with contextlib.suppress(Exception):
                writer.close()

    def _refuse_peer(self, opened: Opened) -> str | None:
        """Why a peer that passed authentication may still not talk to us (None: it may).

        The cluster secret proves membership, not identity: the registry says which epoch of
        each instance is the current one, so a stale instance (a zombie that lost its log lock)
        or a peer using another instance's name is turned away.
        """
        if opened.peer is None:
            return None
        if opened.peer == self.name:
            return f"a peer claims to be {self.name!r}, which is this instance"
        record = self.home.lookup(opened.peer)
        if record is None:
            return f"a peer claims to be {opened.peer!r}, which is not registered"
        if record.epoch != opened.epoch:
            return (
                f"a peer claims to be {opened.peer!r} at epoch {opened.epoch}, "
                f"but {opened.peer!r} is at epoch {record.epoch}"
            )
        return None

    async def _on_message(
        self, peer: str | None, m: dict[str, Any], writer: asyncio.StreamWriter
    ) -> bool:
        t = m["t"]
        if t == "call" and peer is None:
            key = m.get("id")
            if (
                not isinstance(key, str | bytes)
                or not isinstance(m.get("m"), str)
                or not isinstance(m.get("a", []), list)
            ):
                _write(
                    writer,
                    {
                        "t": "result",
                        "id": key,
                        "ok": False,
                        "v": ["BadRequest", "call needs id, m (str), a (list)"],
                    },
                )
                return True
            self._admit_call({"k": "call", "id": key, "m": m["m"], "a": m.get("a", [])}, writer)
        elif t == "msgs" and peer is not None:
            faults.hit("after-receive")
            messages = m.get("b", ())
            for start in range(0, len(messages), PIPELINE_SLICE):
                if start:
                    # Let the log thread's finished batch be released before executing more:
                    # the peer then works on the first slice while this one executes, instead
                    # of the whole window bouncing between the two processes as one clump.
                    await asyncio.sleep(0)
                if not self._admit_messages(peer, messages[start : start + PIPELINE_SLICE]):
                    return False
        elif t == "ping":
            _write(writer, {"t": "pong"})
        return True

    def _admit_messages(self, peer: str, messages: list[list[Any]]) -> bool:
        """Execute the new ones among messages from ``peer``; False on a sequence gap."""
        for message in messages:
            seq = message[1]
            if seq <= self._held_upto.get(peer, 0):
                continue  # already accepted, held until a checkpoint is taken
            verdict = self.streams.admit(peer, seq)
            if _DEBUG:
                _debug(f"{self.name}: message {seq} from {peer}: {verdict}")
            if verdict == "duplicate":
                continue
            if verdict == "gap":
                return False
            self.submit(_as_input(peer, message))
        return True

    def _link(self, peer: str) -> _Link:
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link(self, peer)
        return link

    # -- stopping --------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until everything executed is durable and released."""
        while self._inflight is not None or self._pending:
            if self._inflight is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._inflight)
            else:
                self._kick()
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        await self.drain()
        for link in self._links.values():
            link.close()
        for handle in self._timers.values():
            handle.cancel()
        if self._clock_handle is not None:
            self._clock_handle.cancel()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._send_acks()
        if self._writer is not None:
            self._writer.close()
        if self._released_fd >= 0:
            os.close(self._released_fd)
            self._released_fd = -1
        self._io.shutdown(wait=True)
        self.home.close()


class _Link:
    """The outgoing connection to one peer: connects (again) by name, resends what is unacknowledged."""

    def __init__(self, node: Node, peer: str) -> None:
        self.node = node
        self.peer = peer
        self._writer: asyncio.StreamWriter | None = None
        self._conn: Connection | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake = asyncio.Event()

    def send(self, messages: list[list[Any]]) -> None:
        if self._writer is not None and self._conn is not None:
            self._writer.write(self._conn.send({"t": "msgs", "b": messages}))

    def acknowledged(self, last: int) -> None:
        self.node.streams.acknowledge(self.peer, last)

    async def _run(self) -> None:
        delay = 0.05
        while not self.node._stopping:
            record = self.node.home.lookup(self.peer)
            _debug(
                f"{self.node.name}: link to {self.peer}: looking up -> {record and record.address}"
            )
            if record is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.node.config.reconnect_max_delay)
                continue
            try:
                reader, writer = await asyncio.open_connection(record.host, record.port)
            except OSError as exc:
                _debug(f"{self.node.name}: link to {self.peer}: connect failed: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.node.config.reconnect_max_delay)
                continue
            conn = Connection(
                me=self.node.name,
                epoch=self.node.epoch,
                secret=self.node._secret,
                initiator=True,
                last_from=self.node.durable_from,
            )
            writer.write(conn.start())
            try:
                await self._serve(conn, reader, writer)
                delay = 0.05
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the link: log it, reconnect
                self.node.log(
                    f"{self.node.name}: link to {self.peer} failed: {exc!r}; reconnecting"
                )
            finally:
                self._writer = None
                self._conn = None
                with contextlib.suppress(Exception):
                    writer.close()
            await asyncio.sleep(delay)

    async def _serve(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        beat = self.node.config.heartbeat_seconds

        def on_quiet(periods: int) -> None:
            if periods >= 3:
                writer.close()  # the pending read ends; _run reconnects
            elif self._conn is not None:
                writer.write(conn.send({"t": "ping"}))

        watch = _QuietWatch(beat, on_quiet)
        try:
            await self._read_events(conn, reader, writer, watch)
        finally:
            watch.cancel()
        if watch.quiet >= 3:
            self.node.log(
                f"{self.node.name}: {self.peer} silent for {3 * beat:.0f} s; reconnecting"
            )

    async def _read_events(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        watch: _QuietWatch,
    ) -> None:
        while True:
            events = await _receive(conn, reader, writer, watch)
            if events is None:
                _debug(f"{self.node.name}: link to {self.peer}: closed")
                return
            for event in events:
                if isinstance(event, Opened):
                    if event.peer != self.peer:
                        writer.write(
                            conn.send_error(f"expected {self.peer!r}, reached {event.peer!r}")
                        )
                        return
                    self.node.streams.acknowledge(self.peer, event.last)
                    self._conn, self._writer = conn, writer
                    pending = self.node.streams.unacknowledged(self.peer, event.last)
                    _debug(
                        f"{self.node.name}: link to {self.peer} open (it has {event.last}); "
                        f"resending {len(pending)}"
                    )
                    if pending:
                        writer.write(conn.send({"t": "msgs", "b": pending}))
                elif isinstance(event, Received):
                    if event.message["t"] == "ack":
                        self.node.streams.acknowledge(self.peer, int(event.message["upto"]))
                elif isinstance(event, Closed):
                    self.node.log(f"{self.node.name}: link to {self.peer} closed: {event.reason}")
                    return

    def close(self) -> None:
        self._task.cancel()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


class _QuietWatch:
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


async def _receive(
    conn: Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    watch: _QuietWatch | None,
) -> list[Event] | None:
    """Read what arrives, feed it to the protocol, send its answer; None when the peer closed."""
    data = await reader.read(1 << 16)
    if not data:
        return None
    if watch is not None:
        watch.heard = True
    events, reply = conn.receive_data(data)
    if reply:
        writer.write(reply)
    return events


def _as_input(peer: str, message: list[Any]) -> dict[str, Any]:
    """A peer message turned into the step input that executes it."""
    _target, seq, kind = message[0], message[1], message[2]
    if kind == "c":
        return {
            "k": "call",
            "from": peer,
            "seq": seq,
            "m": message[3],
            "a": message[4],
            "r": message[5],
        }
    re_seq, ok, value = message[3], message[4], message[5]
    inp: dict[str, Any] = {"k": "reply", "from": peer, "seq": seq, "re": re_seq}
    if ok:
        inp["ok"] = value
    else:
        inp["err"] = value
    return inp


def _write(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    from ._wire import encode_message

    with contextlib.suppress(Exception):
        writer.write(encode_message(message))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


_DEBUG = bool(os.environ.get("IMMORTALS_DEBUG"))


def _debug(message: str) -> None:
    """Connection-level detail, only with IMMORTALS_DEBUG=1 (what a person debugging links needs)."""
    if _DEBUG:
        print(f"debug: {message}", file=sys.stderr, flush=True)
