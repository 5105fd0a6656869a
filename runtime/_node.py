"""A running instance: the asyncio driver of its coordinator.

The coordinator (``_coordinator.py``) makes every decision: what executes, what is appended,
when anything is released, what a handshake promises and resends. This module only moves
bytes and time for it: the log writer (on a log thread for big batches), the TCP server and the
links to peers (``_link.py``), timers on the event loop, and stdout for emits. Each event goes
to the coordinator, and the actions it returns are carried out at once, in order (``_do``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from logformat import (
    FencedError,
    LogLockedError,
    LogMeta,
    LogReader,
    LogWriter,
    LsnOutOfRangeError,
    acquire_lock,
    claim,
    seal_checkpoint,
    write_checkpoint_file,
)

from . import _faults as faults
from ._actions import (
    Ack,
    Answer,
    Append,
    Connect,
    Emit,
    LookedUp,
    LookUp,
    Released,
    RunEffect,
    Send,
    SetTimer,
    Warn,
)
from ._apps import LoadedApp
from ._codestore import declared_version
from ._coordinator import Coordinator, CoordinatorConfig
from ._effects import Outcome, run_effect
from ._errors import ImmortalsError, InstanceError, NondeterminismError, UpgradeError
from ._executor import EffectRequest, Sources, app_state
from ._home import Home, InstanceRecord, Lease, StandbyRecord
from ._keys import DEFAULT_RETENTION, KeyIndex
from ._link import Accepted, HandshakeGate, Link, QuietWatch, debug, receive
from ._protocol import Closed, Connection, Opened, Received
from ._released import ReleasedFile
from ._schema import PONG, ack, read_ack, read_checkpoint, read_msgs, result
from ._standby import (
    FOLLOW_POLL,
    REPORT_EVERY,
    REPORT_FRESH,
    LockWaiter,
    holder_alive,
    holder_id,
)
from ._upgrade_check import CheckSummary, check_new_code, shape_problems
from ._versions import CodeBook

PIPELINE_SLICE = 64  # messages executed between two looks at the log thread
EFFECT_WORKERS = 16  # side effects that may run at once (each blocks a thread while it runs)
# Why a stopping instance closes a connection that brings new inputs: a drain that went on
# admitting them would never end under load, and everything not executed yet is resent anyway.
STOPPING: Final = "the instance is stopping; reconnect to reach whoever serves it next"
STOP_WAIT = 30.0  # seconds a live upgrade waits for the old process to stop after SIGTERM
KEYS_MARK_EVERY = 1.0  # seconds between two "covered" marks of the key index without keys
CLOSE_ENOUGH = 64  # steps behind the running instance at which a takeover asks it to stop
INLINE_BATCH = 4  # batches of at most this many steps are made durable on the event loop
EXIT_CANNOT_PRINT = 74  # EX_IOERR: stdout cannot be written
# What leaves the process, so what a primary that lost its role must not carry out.
RELEASES: Final = (Send, Answer, Emit, Released, Ack, RunEffect)
EXIT_LOST_ROLE = 75  # EX_TEMPFAIL: another process took the primary role; this one must go


@dataclass(slots=True)
class NodeConfig:
    """How an instance runs: its network and output settings, and its coordinator's knobs.
    Defaults suit production; tests shrink the intervals."""

    host: str = "127.0.0.1"
    port: int = 0
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    key_retention: float = DEFAULT_RETENTION  # seconds an outside call's key is remembered
    emit_stream: IO[str] | None = None
    emit_tagged: bool = False
    reconnect_max_delay: float = 1.0
    heartbeat_seconds: float = 1.0
    sources: Sources | None = None
    upgrade_check: str = "default"  # strict | warn | off | default (refuse new exceptions only)
    check_history: bool = True  # replay the steps since the last checkpoint after each one
    take_over: bool = False  # a live upgrade: follow the running instance's log, then replace it
    # Replay takes a step the recorded code does not reproduce as the code re-executes it,
    # instead of refusing to start (``--accept-divergence``).
    accept_divergence: bool = False
    standby: bool = False  # follow the primary's log, warm, and take over when it dies
    # The primary role's lease: it lapses this long after the last renewal (renewed every
    # third of it). A standby that cannot see the writer lock (another machine, or a primary
    # paused with SIGSTOP, which keeps its lock) takes over when it lapses.
    lease_ttl: float = 2.0
    watch_lock: bool = True  # a standby also takes over the instant the writer lock frees


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


class LostRaceError(InstanceError):
    """Another process took the primary role first (it holds a live lease at a newer epoch)."""


class Node:
    """One instance of an app, live."""

    def __init__(
        self, app: LoadedApp, *, name: str, home: Home, config: NodeConfig | None = None
    ) -> None:
        self.app = app
        self.name = name
        self.home = home
        self.config = config or NodeConfig()
        knobs = self.config.coordinator
        self.coordinator = Coordinator(
            app.cls,
            name=name,
            config=dataclasses.replace(knobs, look_up_keys=knobs.durable),  # the log answers
            sources=self.config.sources,
        )
        self.executor = self.coordinator.executor
        self.streams = self.coordinator.streams
        self.epoch = 0
        self.secret = b""
        self.address = ""
        self.stopping = False
        self.log = _stderr_log
        self._writer: LogWriter | None = None
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="log")
        # Lease renewals: a registry write (an fsync) that must not stall the event loop.
        self._lease_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lease")
        self._effect_slots = threading.BoundedSemaphore(EFFECT_WORKERS)
        self._inflight: asyncio.Future[int] | None = None
        self._links: dict[str, Link] = {}
        self._incoming: dict[str, Accepted] = {}
        self._timers: dict[Any, asyncio.TimerHandle] = {}
        self._server: asyncio.Server | None = None
        self._released: ReleasedFile | None = None
        self._keys: KeyIndex | None = None
        self._key_reader: LogReader | None = None
        self._emit_stream = self.config.emit_stream or sys.stdout
        self._code_book: CodeBook | None = None
        self._upgrade: dict[str, Any] | None = None  # the upgrade step start() takes first
        self._batch: Append | None = None  # the append in flight
        self._checked_upto = 0  # the background replay check has covered the steps up to here
        self._history_check: subprocess.Popen[bytes] | None = None
        self._warm = False  # the coordinator already replayed the log (a takeover followed it)
        self._accepted: list[int] = []  # steps replay took as the code re-executed them
        self._lock_fd: int | None = None  # the writer lock a standby won, for the log writer
        self.standing_by = False  # following as a standby, not yet taking over
        self.holder = holder_id()  # who this process is in the registry's lease
        self.lease: Lease | None = None  # the primary role, while this process holds it
        self._lease_until = 0.0  # monotonic time the lease surely holds until
        self._fence_takeover = False  # a standby taking over a primary that may still live
        self._lock_waiter: LockWaiter | None = None  # a fenced taker waiting for the old lock
        self._keys_marked = 0.0  # when the key index last said how far it covers the log

    @property
    def durable_lsn(self) -> int:
        return self.coordinator.durable_lsn

    # -- start and recovery ---------------------------------------------------------------------

    async def start(self) -> StartupReport:
        if self.config.take_over:
            await self._follow_and_stop_the_running_one()
        while True:
            if self.config.standby:
                await self._stand_by()
            started = time.perf_counter()
            self.secret = self.home.secret()
            if not self.config.coordinator.durable:
                self.epoch = self.home.next_epoch(self.name)
                break
            try:
                self._become_primary()
                break
            except LostRaceError:
                if not self.config.standby:
                    raise
                self.log(f"{self.name}: another standby took over first; standing by again")
        checkpoint_lsn: int | None = None
        replayed = 0
        skipped: list[str] = []
        if self.config.coordinator.durable:
            checkpoint_lsn, replayed, skipped = self._recover()
            self._open_keys()
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
        self.coordinator.start(time.time(), upgrade=self._upgrade)
        self._do()
        if self.config.coordinator.durable:
            self._look_for_standbys()
            self._renew_lease()
            if self.config.take_over:
                with contextlib.suppress(ImmortalsError):
                    self.home.registry.reserve(self.name, self.holder, 0.0)
            if self._writer is not None and self._fence_takeover:
                self._regain_lock()
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
        """Open the log, load the newest checkpoint, replay what follows, re-release emits."""
        log_dir = self.home.log_dir(self.name)
        # The lock was taken (or, for a fenced takeover, claimed around) by _become_primary.
        self._writer = LogWriter.open(
            log_dir,
            epoch=self.epoch,
            create=LogMeta(self.name, self.app.spec, self.app.code_version),
            fault_hook=faults.hit if faults.armed("mid-frame", "mid-checkpoint") else None,
            lock_fd=self._lock_fd,
            take_over=self._fence_takeover,
        )
        self._lock_fd = None  # the writer holds it now
        app_cls = self.app.cls
        if self._code_book is None:
            self._code_book = CodeBook(log_dir, self._writer.meta, at_hand=lambda: app_cls)
        book = self._code_book
        book.meta = self._writer.meta
        book.keep(self.app.bundle, self.app.cls)  # before any step runs it
        book.load_all()
        coordinator = self.coordinator
        coordinator.executor.code_for = book.app_for
        checkpoint_lsn: int | None = None
        skipped: list[str] = []
        replayed = 0
        # Kept open after recovery: old outside keys are looked up in the log through it.
        reader = self._key_reader = LogReader(log_dir)
        try:
            from logformat import CheckpointError

            failed: list[CheckpointError] = []
            found = reader.newest_checkpoint(
                allow_pickle=self.config.coordinator.allow_pickle, failed=failed
            )
            if found is not None:
                checkpoint_lsn, skipped = found[0], [str(e) for e in found[2]]
            if not self._warm:  # a takeover restored its state while it followed the log
                self._start_from(found, log_dir)
            if coordinator.next_lsn < reader.first_lsn:
                # The steps before the log's first LSN were trimmed: replaying from a later one
                # would run the app from a state it never had (``__init__`` and ``main`` again).
                first = reader.first_lsn
                loaded = (
                    f"the newest checkpoint that loads is at LSN {checkpoint_lsn}"
                    if checkpoint_lsn is not None
                    else "no checkpoint loads"
                )
                reasons = "; ".join(" ".join(str(e).split()) for e in failed) or "none is left"
                raise InstanceError(
                    f"{log_dir}: cannot recover: the first LSN it still holds is {first} (the "
                    f"steps before it were trimmed) and {loaded} (failed: {reasons}); a checkpoint "
                    f"at LSN {first - 1} or later is needed: restore the checkpoints from a "
                    "backup, or move the log aside to start the instance afresh"
                )
            replayed = self._replay(reader)
            if coordinator.next_lsn != self._writer.next_lsn:
                raise InstanceError(
                    f"{log_dir}: the log ends at LSN {self._writer.next_lsn - 1} but its state "
                    f"reaches LSN {coordinator.next_lsn - 1} (a checkpoint beyond the log's end: "
                    "segments are missing); restore the missing segments, or move the log aside "
                    "to start the instance afresh"
                )
            for note in book.fallbacks:
                self.log(f"{self.name}: code version {note}")
            self._upgrade = self._prepare_upgrade(reader, checkpoint_lsn)
            if self._accepted:
                self._settle_accepted()
            self._checked_upto = coordinator.next_lsn - 1  # recovery replayed (checked) these
            span = coordinator.unreleased(self._released_upto(reader))
            if span is not None:
                for rec in reader.records(*span):
                    coordinator.rerelease(rec.value, rec.lsn)
        except BaseException:
            reader.close()
            self._key_reader = None
            raise
        self._do()
        return checkpoint_lsn, replayed, skipped

    async def _follow_and_stop_the_running_one(self) -> None:
        """A live upgrade's first half: replay the running instance's log while it serves (with
        its recorded code), check the new code over recent history (refusing leaves the running
        instance untouched), then ask it to stop (SIGTERM: it drains, makes everything durable
        and exits) and keep following until its writer lock is free. ``start`` then opens the
        log and only replays the last few steps."""
        log_dir = self.home.log_dir(self.name)
        record = self.home.lookup(self.name)
        if record is None or not self.home.is_running(self.name, record):
            raise InstanceError(
                f"{self.name!r} is not running, so there is nothing to take over: start it with "
                f"`immortals run {self.app.spec} --name {self.name}` (a restart with new code "
                "is an upgrade too)"
            )
        reader = LogReader(log_dir)
        try:
            coordinator = self.coordinator
            checkpoint_lsn = self._begin_following(reader)
            old_version = reader.meta.code_version
            if old_version != self.app.code_version and self.config.upgrade_check != "off":
                old_cls = coordinator.executor.app_cls
                summary = self._check_upgrade(reader, checkpoint_lsn, declared_version(old_cls))
                what = f"{self.name}: live upgrade {old_version} -> {self.app.code_version}"
                self.log(f"{what}: {summary.line()}")
                if summary.refuses(self.config.upgrade_check):
                    raise UpgradeError(
                        f"{what} refused, and {self.name!r} goes on running: {summary.line()}. "
                        f"See `immortals upgrade test {self.name} --app {self.app.spec}`, or "
                        "pass --skip-test"
                    )
            self.config.upgrade_check = "off"  # checked just now, while the old one served
            # The old one served on during the check: apply what it wrote meanwhile now, not in
            # the pause after SIGTERM (at 1.5k calls/s over a check of 52k steps, that was
            # thousands of steps, 250 ms of pause).
            for _ in range(10):
                if self._catch_up(reader) < CLOSE_ENOUGH:
                    break
            faults.hit("takeover-follow")
            # Standbys stand back while this process replaces the primary (not for longer
            # than the stop may take; and not at all once this process is gone).
            self.home.registry.reserve(self.name, self.holder, ttl=STOP_WAIT + 10)
            with contextlib.suppress(ProcessLookupError):  # it died already: its lock is free
                os.kill(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT
            while self.home.is_running(self.name, record):
                if time.monotonic() > deadline:
                    raise InstanceError(
                        f"{self.name!r} (pid {record.pid}) did not stop within {STOP_WAIT:g} s "
                        "of SIGTERM; it goes on running"
                    )
                self._catch_up(reader)
                await asyncio.sleep(0.002)
            faults.hit("takeover-locked")
            self._catch_up(reader)
            self._warm = True
        finally:
            reader.close()

    def _become_primary(self) -> None:
        """Take the primary role: the writer lock (a standby brings the one it won, or none
        when it takes over a primary that may still live), then the lease, which moves the
        epoch up by compare-and-set; a fenced takeover also claims the log at that epoch, so
        the old primary can neither append nor release from now on (``_check_role``)."""
        log_dir = self.home.log_dir(self.name)
        if self._lock_fd is None and not self._fence_takeover:
            log_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._take_lock(log_dir)
        registry, ttl = self.home.registry, self.config.lease_ttl
        for _attempt in range(5):  # another taker may move the epoch between read and write
            held = registry.lease(self.name)
            holder_dead = self._lock_fd is not None and (
                held is None or not holder_alive(held.holder)
            )
            lease = registry.take_primary(
                self.name,
                self.holder,
                expected_epoch=registry.epoch(self.name),
                ttl=ttl,
                holder_dead=holder_dead,
            )
            if lease is not None:
                break
        else:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            held = registry.lease(self.name)
            who = (
                f" ({held.holder}, its lease runs {held.expires - time.time():.1f} s more)"
                if held is not None
                else ""
            )
            raise LostRaceError(
                f"instance {self.name!r} has a live primary{who}; start this "
                "one with --standby to take over when it goes"
            )
        self.lease, self.epoch = lease, lease.epoch
        self._lease_until = time.monotonic() + ttl
        if self._fence_takeover:
            claim(log_dir, self.epoch)  # before reading the tail: see FORMAT.md 8.1

    def _regain_lock(self) -> None:
        """A fenced takeover serves without the writer lock (the old process kept it): take it
        once that process is gone, so that ``status``, ``call`` and ``stop`` (which ask the
        lock whether the instance runs) see this primary. Held until the process ends."""
        waiter = LockWaiter(self.home.log_dir(self.name), asyncio.get_running_loop(), lambda: None)
        self._lock_waiter = waiter  # it holds the lock once granted, until stop() closes it
        waiter.start()

    def _take_lock(self, log_dir: Path) -> int:
        """The writer lock, or "already running". A live upgrade tries for a while: a standby
        that got the lock as the old primary went lets go of it within a poll."""
        patience = time.monotonic() + (2.0 if self.config.take_over else 0.0)
        while True:
            try:
                return acquire_lock(log_dir)
            except LogLockedError:
                if time.monotonic() >= patience:
                    running = self.home.lookup(self.name)
                    where = f" (pid {running.pid} at {running.address})" if running else ""
                    raise InstanceError(
                        f"instance {self.name!r} is already running{where}"
                    ) from None
                time.sleep(0.002)

    def _renew_lease(self) -> None:
        """Every third of the lease's time: renew it (on a thread of its own: the registry's
        write ends in an fsync), or stop at once if another took the role."""
        lease = self.lease
        if self.stopping or lease is None:
            return
        loop = asyncio.get_running_loop()
        asked = time.monotonic()
        renewing = loop.run_in_executor(
            self._lease_io, self.home.registry.renew, lease, self.config.lease_ttl
        )
        renewing.add_done_callback(lambda done: self._renewed(done, asked))
        third = self.config.lease_ttl / 3
        self._timers["lease"] = loop.call_later(third, self._renew_lease)

    def _renewed(self, done: asyncio.Future[Lease | None], asked: float) -> None:
        if self.lease is None:  # given up meanwhile (a clean stop)
            return
        exc = done.exception()
        self._take_renewal(None if exc is not None else done.result(), exc, asked)

    def _renew_now(self) -> None:
        assert self.lease is not None
        asked = time.monotonic()
        try:
            renewed = self.home.registry.renew(self.lease, self.config.lease_ttl)
        except ImmortalsError as exc:
            self._take_renewal(None, exc, asked)
        else:
            self._take_renewal(renewed, None, asked)

    def _take_renewal(self, renewed: Lease | None, exc: BaseException | None, asked: float) -> None:
        """A renewal asked at ``asked`` (monotonic) came back: the lease holds a TTL from then,
        another took the role (exit), or the registry failed (it may lapse: say so)."""
        if exc is not None:
            self.log(f"{self.name}: could not renew the primary lease: {exc}")
            return
        if renewed is None:
            self._lost_role("its lease was taken by another process")
        self.lease = renewed
        self._lease_until = max(self._lease_until, asked + self.config.lease_ttl)

    def _check_role(self) -> None:
        """Before anything leaves this process (a message, a reply, an emit, an ack, a side
        effect): is it still the primary? Not once a newer epoch claimed the log, nor once its
        lease may have lapsed unrenewed (a process paused past it) and cannot be renewed."""
        writer = self._writer
        if writer is not None and writer.fenced():
            self._lost_role("a newer epoch claimed the log")
        if self.lease is not None and time.monotonic() >= self._lease_until:
            self._renew_now()
            if time.monotonic() >= self._lease_until:
                self._lost_role("its lease lapsed and could not be renewed")

    def _lost_role(self, why: str) -> None:
        """Exit at once, releasing nothing: another process is the primary now."""
        self.log(
            f"{self.name}: this process (epoch {self.epoch}, {self.holder}) is no longer the "
            f"primary: {why}. It exits without writing or releasing anything; the new primary "
            "serves, and nothing is lost (`immortals status` shows who serves)"
        )
        os._exit(EXIT_LOST_ROLE)

    async def _stand_by(self) -> None:
        """Follow the primary's log as a standby: apply each durable step as it appears (the
        state stays warm, nothing is released or sent) and report how far it got. Return
        when this process should take the primary role (``_takeover_kind``), with the log's
        tail applied; ``start`` then takes the lease at a new epoch, opens the log and serves."""
        if not self.config.coordinator.durable:
            raise InstanceError("a standby follows a log: --standby needs --durability fsync")
        log_dir = self.home.log_dir(self.name)
        self.standing_by = True
        if not (log_dir / "meta.json").exists():
            self.log(f"{self.name}: standby waiting for the primary to create {log_dir}")
        while not (log_dir / "meta.json").exists():
            await asyncio.sleep(0.05)
        granted = asyncio.Event()
        loop = asyncio.get_running_loop()
        waiter: LockWaiter | None = None
        reader = LogReader(log_dir, private_index=True)  # the primary may pause mid-write
        registry = self.home.registry
        try:
            if not self._warm:  # a standby that lost a race for the role is warm already
                self._begin_following(reader)
            self.log(
                f"{self.name}: standby {self.holder} following {log_dir} at LSN "
                f"{self.coordinator.next_lsn - 1}"
            )
            report_due, lag = 0.0, 0.0
            checkpoints = reader.checkpoints()
            written = checkpoints[-1].lsn if checkpoints else 0
            written_at = time.monotonic()
            while True:
                reserved = registry.reservation(self.name)
                if reserved not in (None, self.holder) and holder_alive(reserved):
                    # A live upgrade is replacing the primary: stand back, and let go of the
                    # writer lock if this standby got it, for the upgrade to take.
                    if waiter is not None:
                        waiter.close()
                        waiter = None
                    granted.clear()
                    kind = None
                else:
                    if waiter is None and self.config.watch_lock:
                        waiter = LockWaiter(log_dir, loop, granted.set)
                        waiter.start()
                    kind = self._takeover_kind(granted.is_set())
                if kind is not None:
                    break
                first = self.coordinator.next_lsn
                if self._catch_up(reader):  # how long the oldest of them waited to be applied
                    lag = max(lag, time.time() - reader.read(first).wall_ns / 1e9)
                now = time.monotonic()
                if self._checkpoint_due_as_standby(now - written_at, written):
                    if self._checkpoint_as_standby(written):
                        written = self.coordinator.next_lsn - 1
                    written_at = now
                if now >= report_due:
                    registry.report_standby(
                        StandbyRecord(
                            self.name,
                            self.holder,
                            os.getpid(),
                            self.coordinator.next_lsn - 1,
                            reader.last_lsn,
                            lag * 1000,
                            time.time(),
                            written,
                        )
                    )
                    report_due, lag = now + REPORT_EVERY, 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(granted.wait(), FOLLOW_POLL)
            self.standing_by = False
            self._catch_up(reader)  # the primary is gone: its last steps are all there
            if granted.is_set() and waiter is not None:
                self._lock_fd = waiter.take_fd()
            self._fence_takeover = kind == "fence"
            self._warm = True
            why = "it died" if kind == "lock" else "its lease lapsed"
            self.log(
                f"{self.name}: the primary is gone ({why}); standby {self.holder} takes over "
                f"at LSN {self.coordinator.next_lsn - 1}"
            )
        finally:
            self.standing_by = False
            if waiter is not None:
                waiter.close()
            reader.close()
            with contextlib.suppress(Exception):  # a report, advisory: never the reason to fail
                registry.drop_standby(self.name, self.holder)

    def _takeover_kind(self, locked: bool) -> str | None:
        """Whether a standby should take over now, and how: "lock" when it holds the writer
        lock and the lease's holder is gone (the kernel freed the lock of a dead process),
        "fence" when the lease lapsed while its holder may still live (paused, or on another
        machine: the log is claimed at the new epoch, which fences it out), None to go on."""
        held = self.home.registry.lease(self.name)
        if held is None:
            return "lock" if locked else None  # a primary without a lease: its lock decides
        if locked and not holder_alive(held.holder):
            return "lock"
        if not held.live() and (locked or not self.config.watch_lock or holder_alive(held.holder)):
            return "fence"
        return None  # (a dead holder's lock is another standby's to take)

    def _checkpoint_due_as_standby(self, elapsed: float, written: int) -> bool:
        """The primary's policy, on the standby's side: ``checkpoint_seconds`` since the last
        one, or the steps since it would take ``checkpoint_replay_seconds`` to replay."""
        knobs = self.config.coordinator
        if elapsed >= knobs.checkpoint_seconds:
            return True
        replay = (self.coordinator.next_lsn - 1 - written) * self.coordinator.step_cost
        return replay >= knobs.checkpoint_replay_seconds and elapsed >= knobs.checkpoint_min_seconds

    def _checkpoint_as_standby(self, written: int) -> bool:
        """Write a checkpoint from this standby's replayed state, if the state moved since
        the last one, no handler is suspended, and this is the standby that writes them (the
        first holder in order of those reporting: one writer, no two racing on a file)."""
        lsn = self.coordinator.next_lsn - 1
        if lsn <= written:
            return False
        fresh = self.home.registry.standbys(self.name, fresh_within=REPORT_FRESH)
        if any(other.holder < self.holder for other in fresh):
            return False
        packed = self.coordinator.checkpoint_now()
        for action in self.coordinator.take():  # a standby carries out nothing: say why not
            if isinstance(action, Warn):
                self.log(action.text)
        if packed is None:
            return False
        codec, data = packed
        write_checkpoint_file(self.home.log_dir(self.name), lsn, seal_checkpoint(lsn, codec, data))
        return True

    def _begin_following(self, reader: LogReader) -> int | None:
        """Start following a log another process writes: its code versions, its newest
        checkpoint (the LSN returned), then every step after it (``_catch_up``)."""
        app_cls = self.app.cls
        book = self._code_book = CodeBook(reader.path, reader.meta, at_hand=lambda: app_cls)
        book.load_all()
        found = reader.newest_checkpoint(allow_pickle=self.config.coordinator.allow_pickle)
        self.coordinator.executor.code_for = book.app_for
        checkpoint_lsn = self._start_from(found, reader.path)
        self._catch_up(reader)
        return checkpoint_lsn

    def _start_from(self, found: tuple[int, Any, Any] | None, log_dir: Path) -> int | None:
        """Load the newest checkpoint (``found``; None: the log's start) with the code that ran
        it, as recovery and a takeover both begin; its LSN."""
        book = self._code_book
        assert book is not None
        coordinator = self.coordinator
        coordinator.executor.use_code(book.app_at(found[0] if found is not None else 1))
        if found is None:
            return None
        lsn, payload, _errors = found
        where = f"checkpoint at LSN {lsn} of {log_dir}"
        coordinator.restore(read_checkpoint(payload, where=where), lsn)
        return lsn

    def _catch_up(self, reader: LogReader) -> int:
        """Apply the steps the running instance made durable since the last look; how many."""
        reader.refresh()
        if self._code_book is not None:  # it may have upgraded: its new code is in the log
            self._code_book.update(reader.meta)
        return self._replay(reader)

    def _replay(self, reader: LogReader) -> int:
        """Replay the log from the coordinator's next LSN to its end; how many steps.

        A step the recorded code does not reproduce stops the start, with the command that
        gets the instance serving again: the same with ``--accept-divergence``, which takes
        such a step as the code re-executes it (``Coordinator.replay``)."""
        coordinator, accept = self.coordinator, self.config.accept_divergence
        count = 0
        started = time.perf_counter()
        for rec in reader.records(coordinator.next_lsn):
            try:
                differs = coordinator.replay(rec.value, rec.lsn, accept=accept)
            except NondeterminismError as exc:
                command = (
                    f"immortals upgrade live {self.name} --app {self.app.spec}"
                    if self.config.take_over
                    else f"immortals run {self.app.spec} --name {self.name}"
                    + (" --standby" if self.config.standby else "")
                )
                raise InstanceError(
                    f"{exc}. To serve again, taking the state such a step leaves when its code "
                    "runs it now (its recorded replies and messages stand, as the world saw "
                    f"them): `{command} --accept-divergence`"
                ) from None
            if differs is not None:
                self._accepted.append(rec.lsn)
                if len(self._accepted) <= 3:  # the first few; _settle_accepted counts them all
                    self.log(f"{self.name}: accepted a step its code does not reproduce: {differs}")
            count += 1
        if count >= 100:  # enough to measure what a step costs to replay (checkpoint policy)
            coordinator.set_step_cost((time.perf_counter() - started) / count)
        return count

    def _settle_accepted(self) -> None:
        """After steps were accepted: a checkpoint now, so no recovery replays them again."""
        lsns = ", ".join(map(str, self._accepted[:10])) + (
            ", ..." if len(self._accepted) > 10 else ""
        )
        what = f"{self.name}: accepted {len(self._accepted)} steps as their code runs them ({lsns})"
        packed = self.coordinator.checkpoint_now()
        if packed is None:
            self.log(
                f"{what}; no checkpoint can be written now (a handler is suspended), so a "
                "recovery before the next checkpoint needs --accept-divergence again"
            )
            return
        lsn = self.coordinator.next_lsn - 1
        self._write_checkpoint(lsn, packed)
        self.log(f"{what}; wrote a checkpoint at LSN {lsn}, so recovery will not replay them")

    def _prepare_upgrade(
        self, reader: LogReader, checkpoint_lsn: int | None
    ) -> dict[str, Any] | None:
        """The upgrade step to take before serving, when the code at hand is not the code the
        log ran last; None when it is (or the upgrade must wait). Runs the upgrade check first:
        UpgradeError refuses the start, with nothing logged."""
        writer, book, coordinator = self._writer, self._code_book, self.coordinator
        assert writer is not None and book is not None
        old_version, new_version = writer.meta.code_version, self.app.code_version
        if old_version == new_version:
            return None
        if self.config.standby and new_version in {v.code_version for v in writer.meta.versions}:
            self.log(
                f"{self.name}: serving the log's code version {old_version}: this standby was "
                f"started with {new_version}, which the log ran before (no downgrade by "
                "failover; upgrade by restarting or `immortals upgrade live`)"
            )
            return None
        if writer.next_lsn == 1:  # nothing ran yet: no upgrade, just this code from LSN 1
            writer.record_code_version(self.app.spec, new_version)
            return None
        executor = coordinator.executor
        if not executor.quiescent:
            self.log(
                f"{self.name}: not upgrading to {new_version} yet: {len(executor.suspended)} "
                f"awaits of handlers that ran {old_version} are pending, and they must finish "
                "with the code they started with; serving with the recorded code (restart "
                "again to upgrade once they are done)"
            )
            return None
        old_cls = executor.app_cls
        from_declared, to_declared = declared_version(old_cls), self.app.bundle.declared
        policy = self.config.upgrade_check
        what = f"{self.name}: upgrade {old_version} -> {new_version}"
        if from_declared is not None or to_declared is not None:
            what += f" (version {from_declared} -> {to_declared})"
        if policy != "off":
            summary = self._check_upgrade(reader, checkpoint_lsn, from_declared)
            self.log(f"{what}: {summary.line()}")
            if summary.refuses(policy) and self.config.standby:
                # A failover must not leave the instance without a primary: serve the code
                # the log ran last, and say why the standby's own code was not taken.
                self.log(
                    f"{what} refused: {summary.line()}; serving the log's code version "
                    f"{old_version} instead (see `immortals upgrade test {self.name} --app "
                    f"{self.app.spec}`)"
                )
                return None
            if summary.refuses(policy):
                raise UpgradeError(
                    f"{what} refused: {summary.line()}. Fix the code and check it with `immortals "
                    f"upgrade test {self.name} --app {self.app.spec}`, or take it anyway with "
                    "--upgrade-check warn; the instance still runs its recorded code if you start "
                    "it with that code"
                )
        writer.record_code_version(self.app.spec, new_version)  # from the upgrade step's LSN
        return {
            "k": "upgrade",
            "prev": old_version,
            "to": new_version,
            "fv": from_declared,
            "tv": to_declared,
        }

    def _check_upgrade(
        self, reader: LogReader, checkpoint_lsn: int | None, from_declared: int | None
    ) -> CheckSummary:
        """The new code over the steps since the last checkpoint (see ``_upgrade_check``)."""
        start = None
        if checkpoint_lsn is not None:
            # Read again, not the payload recovery restored: the live app shares its objects,
            # and the check must not change them.
            found = reader.newest_checkpoint(allow_pickle=self.config.coordinator.allow_pickle)
            if found is not None:
                lsn, payload, _errors = found
                start = (read_checkpoint(payload, where=f"checkpoint at LSN {lsn}"), lsn)
        first = start[1] + 1 if start is not None else reader.first_lsn
        records = ((rec.lsn, rec.value) for rec in reader.records(first))
        summary = check_new_code(
            self.app.cls,
            name=self.name,
            start=start,
            from_version=from_declared,
            records=records,
        )
        app = self.coordinator.executor.app
        if app is not None:  # the state as it is now, not as the checkpoint had it
            state = app_state(app)
            summary.shape = shape_problems(self.app.cls, state, from_declared, name=self.name)
        return summary

    def _released_upto(self, reader: LogReader) -> int:
        """The last LSN whose emits the world has surely seen, from the released mark.

        A damaged mark is not trusted: every emit the log still holds is printed again (at least
        once, tagged), rather than one skipped. A mark beyond the log's end proves that records
        were lost: refuse, as for a checkpoint beyond the end.
        """
        self._released = ReleasedFile(reader.path)
        mark = self._released.read()
        last = reader.last_lsn
        if mark.lsn is None:
            self.log(
                f"{self.name}: the released mark {self._released.path} is damaged "
                f"({mark.problem}); printing every emit the log holds again, from LSN "
                f"{reader.first_lsn} (with --emit-tagged a consumer drops the repeats)"
            )
            return reader.first_lsn - 1
        if mark.lsn > last:
            raise InstanceError(
                f"{self._released.path} says the emits up to LSN {mark.lsn} were printed, but "
                f"the log ends at LSN {last}: records are missing. Restore the missing "
                "segments, or move the log aside to start the instance afresh"
            )
        return mark.lsn

    # -- carrying out the coordinator's actions ----------------------------------------------------

    def _do(self) -> None:
        """Carry out what the coordinator decided, in order."""
        actions = self.coordinator.take()
        if not actions:
            return
        if self.lease is not None and any(isinstance(a, RELEASES) for a in actions):
            self._check_role()  # (an Append is checked by the log writer itself)
        emitted = sent = False
        released: int | None = None
        unprintable: Exception | None = None
        for action in actions:
            if isinstance(action, Send):
                self._link(action.peer).send(action.messages)
                sent = True
            elif isinstance(action, Append):
                self._append(action)
            elif isinstance(action, Emit):
                if unprintable is None:
                    try:
                        self._print_emits(action.lsn, action.values)
                    except (OSError, ValueError) as exc:  # a closed pipe, a full disk
                        unprintable = exc
                emitted = True
            elif isinstance(action, Answer):
                action.caller.write(result(action.key, action.ok, action.value))
            elif isinstance(action, Released):
                released = action.lsn  # marked once the lines are flushed, below
            elif isinstance(action, Ack):
                incoming = self._incoming.get(action.peer)
                if incoming is not None:
                    incoming.write(ack(action.upto))
            elif isinstance(action, SetTimer):
                self._set_timer(action.key, action.due)
            elif isinstance(action, Connect):
                self._link(action.peer)
            elif isinstance(action, LookUp):
                asyncio.get_running_loop().call_soon(self._look_up, action.key)
            elif isinstance(action, RunEffect):
                self._run_effect(action.request)
            elif isinstance(action, Warn):
                self.log(action.text)
        if emitted and unprintable is None:
            try:
                self._emit_stream.flush()
            except (OSError, ValueError) as exc:
                unprintable = exc
        if unprintable is not None:
            self._cannot_print(unprintable)
        if released is not None:
            self._mark_released(released)
        if sent:
            faults.hit("after-send")

    def _cannot_print(self, exc: Exception) -> None:
        """Emits cannot be written: stop, so that a restart prints them (never a silent hang).

        Messages, results and acknowledgements of the batch have gone out already: they do not
        depend on the emit stream. The released mark stays where it was, so the restart prints
        every line that may not have reached the stream (at least once; ``--emit-tagged`` lets
        a consumer drop repeats).
        """
        self.log(
            f"{self.name}: cannot write emits to stdout ({exc!r}); stopping. Restart the "
            "instance with a working stdout: it prints the lines that were not written"
        )
        self.stopping = True
        os._exit(EXIT_CANNOT_PRINT)

    def _append(self, batch: Append) -> None:
        loop = asyncio.get_running_loop()
        self._batch = batch
        small = len(batch.records) <= INLINE_BATCH and batch.checkpoint is None
        if small or self._writer is None:
            # A small batch (ping-pong traffic): handing it to the log thread and back costs more
            # than its fsync, and there is little to overlap with. Write it here. Without a log
            # (--durability none) there is nothing to write: handing the batch to the thread
            # only to come back cost 12% of a pipelined Sink's time (py-spy).
            done: asyncio.Future[int] = loop.create_future()
            try:
                done.set_result(self._write_batch(batch))
            except Exception as exc:
                done.set_exception(exc)
            self._inflight = done
            loop.call_soon(self._on_durable, done)
            return
        self._inflight = loop.run_in_executor(self._io, self._write_batch, batch)
        self._inflight.add_done_callback(self._on_durable)

    def _write_batch(self, batch: Append) -> int:
        """One write + one fsync for the whole batch (on the log thread, or inline if small)."""
        faults.hit("before-fsync")
        writer = self._writer
        if writer is None:
            return 0
        appended = writer.append(batch.records)
        if appended.first_lsn != batch.first_lsn:
            raise RuntimeError(
                f"log at LSN {appended.first_lsn}, batch starts at {batch.first_lsn}"
            )
        keys = self._keys
        if keys is not None:
            if any("rep" in r or "id" in r["in"] for r in batch.records):
                keys.add(batch.first_lsn, batch.records)  # durable now: retries can find them
                self._keys_marked = time.monotonic()
            elif time.monotonic() - self._keys_marked >= KEYS_MARK_EVERY:
                keys.mark(batch.last_lsn)  # so the next start reads only the steps after it
                self._keys_marked = time.monotonic()
        if batch.checkpoint is not None:
            self._write_checkpoint(batch.last_lsn, batch.checkpoint)
        return appended.bytes_written

    def _write_checkpoint(self, lsn: int, checkpoint: tuple[int, bytes]) -> None:
        assert self._writer is not None
        codec, packed = checkpoint
        self._writer.write_checkpoint_bytes(lsn, seal_checkpoint(lsn, codec, packed))

    def _on_durable(self, fut: asyncio.Future[int]) -> None:
        self._inflight = None
        exc = fut.exception()
        if isinstance(exc, FencedError):  # the writer's own check: a newer epoch claimed it
            self._lost_role("a newer epoch claimed the log")
        if exc is not None:
            self.log(f"{self.name}: appending to the log failed, stopping: {exc!r}")
            self.stopping = True
            os._exit(70)  # nothing after this batch may be released; recovery redoes it
        faults.hit("after-fsync")
        if self.stopping:
            faults.hit("draining")
        batch, self._batch = self._batch, None
        self.coordinator.advance(time.time())
        self.coordinator.append_done(fut.result())
        self._do()
        if batch is not None and batch.checkpoint is not None:
            self._check_history(batch.last_lsn)

    def _check_history(self, checkpoint_lsn: int) -> None:
        """Replay the steps since the previous checkpoint in a child process (see
        ``_history_check``); one at a time, and skipped while the last one still runs."""
        running = self._history_check
        if running is not None and running.poll() is None:
            return
        first, self._checked_upto = self._checked_upto + 1, checkpoint_lsn
        if first > checkpoint_lsn or not self.config.check_history:
            return
        root = str(Path(__file__).resolve().parent.parent)  # where this runtime is importable
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        self._history_check = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime._history_check",
                str(self.home.log_dir(self.name)),
                str(first),
                str(checkpoint_lsn),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=path, IMMORTALS_FAULT=""),
        )

    def _print_emits(self, lsn: int, emits: list[Any]) -> None:
        stream = self._emit_stream
        tagged = self.config.emit_tagged
        for index, value in enumerate(emits):
            shown = {"lsn": lsn, "i": index, "value": value} if tagged else value
            stream.write(json.dumps(shown, default=_jsonable) + "\n")

    def _mark_released(self, lsn: int) -> None:
        """Written after printing and without fsync: see ``Coordinator.rerelease``."""
        if self._released is not None:
            self._released.write(lsn)

    def _set_timer(self, key: Any, due: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(0.0, due - time.time()), self._fire_timer, key)

    def _look_for_standbys(self) -> None:
        """Every second: while a standby runs, it writes the checkpoints from its replayed
        state, so this primary takes none and never holds inputs waiting for quiescence."""
        if self.stopping:
            return
        with contextlib.suppress(ImmortalsError):  # a registry problem: keep the last answer
            fresh = self.home.registry.standbys(self.name, fresh_within=REPORT_FRESH)
            self.coordinator.checkpoints_elsewhere(bool(fresh))
            self._do()
        handle = asyncio.get_running_loop().call_later(1.0, self._look_for_standbys)
        self._timers["standbys"] = handle

    def _fire_timer(self, key: Any) -> None:
        self._timers.pop(key, None)
        self.coordinator.advance(time.time())
        self.coordinator.timer_fired(key)
        self._do()

    # -- side effects -----------------------------------------------------------------------------

    def _run_effect(self, request: EffectRequest) -> None:
        """On a thread of its own: the event loop (and every handler) goes on while it runs.

        A daemon thread, not a pool's worker: the interpreter joins a pool's workers at exit, so
        one hung effect would hold up a clean stop forever. An effect cut short by the exit runs
        again after the restart (at least once), under the same key."""
        faults.hit("before-effect")
        loop = asyncio.get_running_loop()

        def work() -> None:
            with self._effect_slots:
                outcome = run_effect(request)
            with contextlib.suppress(RuntimeError):  # the loop closed: the instance stopped
                loop.call_soon_threadsafe(self._effect_finished, request.eid, outcome)

        threading.Thread(target=work, name=f"effect-{request.key}", daemon=True).start()

    def _effect_finished(self, eid: int, outcome: Outcome) -> None:
        if self.stopping:
            return  # a restart runs it again: its outcome never reached the log
        faults.hit("after-effect")
        self.coordinator.advance(time.time())
        self.coordinator.effect_done(eid, *outcome)
        self._do()

    # -- outside callers' keys -----------------------------------------------------------------------

    def _open_keys(self) -> None:
        """Open the key index and catch it up with the log (it is a cache of the log)."""
        assert self._key_reader is not None  # recovery's reader
        log_dir = self.home.log_dir(self.name)
        if self._fence_takeover:
            # The old primary may be paused inside a write of this lmdb index, holding its
            # writer lock forever: opening it would hang the takeover (found by the SIGSTOP
            # test). Set it aside, where the old process's writes land harmlessly, and build
            # it again from the log.
            with contextlib.suppress(FileNotFoundError):
                os.rename(log_dir / "keys", log_dir / f"keys.void-{self.epoch}")
        self._keys = KeyIndex(log_dir, retention=self.config.key_retention)
        self._keys.catch_up(self._key_reader)

    def _look_up(self, key: Any) -> None:
        """The coordinator asks what the log holds for an outside key it no longer remembers."""
        found: LookedUp | str | None = None
        where = self._keys.find(key) if self._keys is not None else None
        reader = self._key_reader
        if where is not None and where[1] and reader is not None:
            call_lsn, result_lsn = where
            if result_lsn > reader.last_lsn:
                reader.refresh()
            try:
                call_input = reader.read(call_lsn).value["in"]
                outcomes = reader.read(result_lsn).value.get("rep", ())
            except LsnOutOfRangeError:
                found = (
                    f"the outcome of the call with key {key!r} is no longer in the log (trimmed "
                    "before the key's retention ran out); the call may have run: check before "
                    "calling again with a new key"
                )
            else:
                for answered, ok, value in outcomes:
                    if answered == key:
                        found = LookedUp(call_input["m"], call_input.get("a", []), ok, value)
        self.coordinator.key_looked_up(key, found)
        self._do()

    # -- connections -------------------------------------------------------------------------------

    def _link(self, peer: str) -> Link:
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = Link(self, peer)
        return link

    def durable_from(self, peer: str) -> int:
        """What the handshake tells ``peer`` we have of its messages (the coordinator decides)."""
        return self.coordinator.durable_from(peer)

    def link_opened(self, peer: str, last: int) -> None:
        """Our link to ``peer`` is open; it has durably logged ``last`` of our messages."""
        self.coordinator.link_opened(peer, last)
        self._do()

    def ack_received(self, peer: str, upto: int) -> None:
        self.coordinator.ack_received(peer, upto)

    @functools.cached_property
    def _handshakes(self) -> HandshakeGate:
        """The accepted connections still in the handshake: bounded in number and in time."""
        return HandshakeGate(lambda line: self.log(f"{self.name}: {line}"))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One incoming connection: a peer's link (its messages to us) or an outside caller."""
        conn = Connection(
            me=self.name,
            epoch=self.epoch,
            secret=self.secret,
            initiator=False,
            last_from=self.durable_from,
        )
        accepted = Accepted(writer, conn)  # what the coordinator's actions name
        gate = self._handshakes
        gate.admit(writer)  # closed if not authenticated in time, or crowded out by newer ones
        peer: str | None = None
        who = "an unidentified peer"
        silence = 3 * self.config.heartbeat_seconds  # a live peer's link pings more often
        watch: QuietWatch | None = None
        try:
            while True:
                events = await receive(conn, reader, writer, watch)
                if events is None:
                    if watch is not None and watch.quiet:
                        self.log(
                            f"{self.name}: {who} went silent for {silence:.0f} s; "
                            "dropped its connection"
                        )
                    return
                for event in events:
                    if isinstance(event, Opened):
                        gate.done(writer)
                        record = self.home.lookup(event.peer) if event.peer is not None else None
                        refusal = self.coordinator.refusal(
                            event.peer, event.epoch, record.epoch if record is not None else None
                        )
                        if refusal is not None:
                            writer.write(conn.send_error(refusal))
                            self.log(f"{self.name}: refused a connection: {refusal}")
                            return
                        peer = event.peer
                        who = peer or "an outside caller"
                        debug(f"{self.name}: accepted {who} (it has {event.last})")
                        if peer is not None:
                            self._incoming[peer] = accepted
                            self.coordinator.peer_connected(peer, event.last)
                            self._do()
                            watch = QuietWatch(silence, lambda quiet: writer.close())
                    elif isinstance(event, Received):
                        why = await self._on_message(peer, event.message, accepted)
                        if why is not None:
                            writer.write(conn.send_error(why))
                            if why is not STOPPING:
                                self.log(f"{self.name}: dropped the connection from {who}: {why}")
                            return
                    elif isinstance(event, Closed):
                        self.log(f"{self.name}: dropped a connection from {who}: {event.reason}")
                        return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # a cancelled accept task at shutdown ends quietly
        finally:
            gate.done(writer)
            if watch is not None:
                watch.cancel()
            if peer is not None and self._incoming.get(peer) is accepted:
                del self._incoming[peer]
            with contextlib.suppress(Exception):
                writer.close()

    async def _on_message(
        self, peer: str | None, m: dict[str, Any], accepted: Accepted
    ) -> str | None:
        """Hand one message to the coordinator; a reason to drop the connection, or None."""
        t = m["t"]
        coordinator = self.coordinator
        if self.stopping and t in ("call", "msgs"):
            return STOPPING  # the caller or peer retries, reaching whoever serves next
        if t == "call" and peer is None:
            coordinator.advance(time.time())
            coordinator.outside_call(accepted, m)
            self._do()
        elif t == "msgs" and peer is not None:
            faults.hit("after-receive")
            messages = read_msgs(m)
            if messages is None:
                return "malformed msgs message"
            coordinator.advance(time.time())
            for start in range(0, len(messages), PIPELINE_SLICE):
                if start:
                    # Let the log thread's finished batch be released before executing more:
                    # the peer then works on the first slice while this one executes, instead
                    # of the whole window bouncing between the two processes as one clump.
                    await asyncio.sleep(0)
                admitted = coordinator.receive_messages(
                    peer, messages[start : start + PIPELINE_SLICE]
                )
                self._do()
                if not admitted:
                    return "sequence gap; reconnect to resend"
        elif t == "ack" and peer is not None:
            upto = read_ack(m)
            if upto is not None:
                coordinator.ack_received(peer, upto)
        elif t == "ping":
            accepted.write(PONG)
        return None

    # -- stopping --------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until everything executed is durable and released."""
        while not self.coordinator.idle:
            if self._inflight is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._inflight)
            else:
                self.coordinator.flush()
                self._do()
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        faults.hit("stopping")
        await self.drain()
        for link in self._links.values():
            link.close()
        ack = self._timers.pop("ack", None)
        for handle in self._timers.values():
            handle.cancel()
        if ack is not None:
            ack.cancel()
            self._fire_timer("ack")  # acknowledge what is durable before going
        self._lease_io.shutdown(wait=True)  # no renewal may land after the role is given up
        if self.lease is not None:  # give the role up: a successor need not wait for a lapse
            with contextlib.suppress(ImmortalsError):
                self.home.registry.renew(self.lease, 0.0)
            self.lease = None
        if self._writer is not None:
            self._writer.close()
        if self._lock_waiter is not None:
            self._lock_waiter.close()  # gives the lock back if it was granted
        if self._keys is not None:
            self._keys.close()
        if self._key_reader is not None:
            self._key_reader.close()
        if self._released is not None:
            self._released.close()
            self._released = None
        self._io.shutdown(wait=True)
        if self._history_check is not None and self._history_check.poll() is None:
            self._history_check.terminate()  # a report, not the log: the next start checks
            self._history_check.wait(5)
        self.home.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
