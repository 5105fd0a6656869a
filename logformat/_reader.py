"""Reading a log, also while another process appends to it.

A reader never changes segments. It finds frames through the index (O(log n) by LSN or by
time), catches the index up past its ``covered`` mark when the writer is behind or gone, and
reads frames with ``pread``. At the end of the newest segment a frame that is not whole yet is
simply not there yet: only the writer, on open, decides that such bytes are a torn tail.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ._checkpoint import (
    CheckpointInfo,
    decode_checkpoint,
    list_checkpoint_files,
)
from ._errors import (
    CheckpointError,
    CorruptLogError,
    FormatVersionError,
    FrameError,
    LsnOutOfRangeError,
    TrimmedError,
    ValueCodecError,
)
from ._files import (
    CatchUp,
    SegmentFile,
    catch_up,
    checkpoint_infos,
    header_matches,
    live_segments,
)
from ._frame import HEADER_SIZE, decode_frame, raw_body
from ._index import FrameLoc, LogIndex
from ._meta import LogMeta, read_meta
from ._segment import SEGMENT_HEADER_SIZE, Damage, may_have_zero_tail, scan_segment
from ._values import unpack_nth, unpack_values

_FRAME_CACHE: Final = 16
_OPEN_FILES: Final = 32
_RUN_BYTES: Final = 8 << 20  # bytes read at once when scanning


@dataclass(frozen=True, slots=True)
class Record:
    """One logged record and the frame facts that came with it."""

    lsn: int
    epoch: int
    wall_ns: int
    value: Any


@dataclass(frozen=True, slots=True)
class LogStats:
    """Sizes and ranges, as ``immortals log info`` shows them."""

    first_lsn: int
    last_lsn: int
    frames: int
    segments: int
    stored_bytes: int
    raw_bytes: int
    first_wall_ns: int | None
    last_wall_ns: int | None

    @property
    def records(self) -> int:
        return max(0, self.last_lsn - self.first_lsn + 1)

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 1.0


class LogReader:
    """Random and sequential access to one log directory."""

    def __init__(self, path: str | os.PathLike[str], *, private_index: bool = False) -> None:
        """``private_index``: catch up a private copy of the index, never the log's own (see
        ``LogIndex``): what a standby following a live writer uses."""
        self.path = Path(path)
        self.meta: LogMeta = read_meta(self.path)
        self._index = LogIndex(self.path, private=private_index)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._frames: OrderedDict[int, tuple[FrameLoc, list[Any]]] = OrderedDict()
        self._raw: OrderedDict[int, bytes] = OrderedDict()
        self._state: CatchUp = catch_up(self.path, self._index, self.meta.log_id)
        self._segments = live_segments(self.path, self._state.fence)
        self._rechecked = False

    # -- range and freshness -------------------------------------------------------------------

    def refresh(self) -> None:
        """See what the writer appended since the last look (and re-read the metadata)."""
        before = self._state.fence
        self._state = catch_up(self.path, self._index, self.meta.log_id)
        if self._state.fence.crc != before.crc or self._state.fence.size != before.size:
            # A takeover since the last look: frames decoded before may be void now, and the
            # taker may have renamed a zombie's file aside to put its own segment in its place.
            self._frames.clear()
            self._raw.clear()
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self._segments = live_segments(self.path, self._state.fence)
        self.meta = read_meta(self.path)

    @property
    def first_lsn(self) -> int:
        return self._segments[0].first_lsn if self._segments else 1

    @property
    def last_lsn(self) -> int:
        """Newest readable LSN as of the last refresh (``first_lsn - 1`` when empty)."""
        return self._state.next_lsn - 1

    @property
    def damage(self) -> list[tuple[Path, Damage]]:
        """Damage met at the end of the sound part of the log (a torn tail, or corruption)."""
        return list(self._state.damage)

    # -- reading ---------------------------------------------------------------------------------

    def read(self, lsn: int) -> Record:
        """The record at ``lsn``; LsnOutOfRangeError outside the log, CorruptLogError if damaged.

        Only the record asked for is decoded: skipping over its neighbours in the decompressed
        frame is an order of magnitude cheaper than decoding them all.
        """
        loc = self._locate(lsn)
        decoded = self._frames.get(loc.first_lsn)
        if decoded is not None:
            return Record(lsn, loc.epoch, loc.wall_ns, decoded[1][lsn - loc.first_lsn])
        try:
            raw = self._load_raw(loc)
        except CorruptLogError:
            if not self._index_was_wrong(lsn):
                raise
            return self.read(lsn)
        try:
            value = unpack_nth(raw, lsn - loc.first_lsn)
        except ValueCodecError as exc:
            raise self._corrupt(loc, str(exc)) from exc
        return Record(lsn, loc.epoch, loc.wall_ns, value)

    def records(self, from_lsn: int | None = None, to_lsn: int | None = None) -> Iterator[Record]:
        """Records from ``from_lsn`` to ``to_lsn`` inclusive (default: the whole log), in order.

        A ``from_lsn`` below the first LSN of a trimmed log raises TrimmedError: those records
        are gone, and starting later instead would hand the caller a history with a hole in it.
        (LSNs below 1 never existed, so a start below 1 means "from the beginning".)
        """
        start = self.first_lsn if from_lsn is None else max(from_lsn, 1)
        if start < self.first_lsn:
            raise TrimmedError(start, self.first_lsn)
        end = self.last_lsn if to_lsn is None else min(to_lsn, self.last_lsn)
        if start > end:
            return
        for loc, values in self.frames(start, end):
            lo = max(start, loc.first_lsn)
            hi = min(end, loc.last_lsn)
            for lsn in range(lo, hi + 1):
                yield Record(lsn, loc.epoch, loc.wall_ns, values[lsn - loc.first_lsn])

    def frames(self, from_lsn: int, to_lsn: int) -> Iterator[tuple[FrameLoc, list[Any]]]:
        """Decoded frames overlapping [from_lsn, to_lsn], read sequentially segment by segment."""
        loc: FrameLoc | None = self._locate(from_lsn)
        while loc is not None and loc.first_lsn <= to_lsn:
            seg = self._segment(loc.segment)
            buf = os.pread(
                self._fd(seg), max(_RUN_BYTES, HEADER_SIZE + loc.stored_size), loc.offset
            )
            pos = 0
            expected = loc.first_lsn
            while pos < len(buf) and expected <= to_lsn:
                try:
                    frame = decode_frame(buf, pos)
                except (FrameError, FormatVersionError):
                    break
                if frame.header.first_lsn != expected:
                    break
                h = frame.header
                if self._state.fence.is_void(h.epoch, h.first_lsn):
                    break  # a fenced-out writer's frame: this segment ends here for readers
                here = FrameLoc(
                    h.first_lsn,
                    seg.first_lsn,
                    loc.offset + pos,
                    h.record_count,
                    h.epoch,
                    h.wall_ns,
                    h.stored_size,
                    h.raw_size,
                )
                yield here, self._decode(here, frame.records)
                pos += h.frame_size
                expected = h.last_lsn + 1
            if expected > to_lsn or expected > self.last_lsn:
                return
            if pos == 0:  # not even the first frame of the run decoded: name the damage
                try:
                    self._load(loc)
                except CorruptLogError:
                    if not self._index_was_wrong(expected):
                        raise
                    loc = self._locate(expected)
                    continue
                raise CorruptLogError(  # pragma: no cover - _load raises for any unsound frame
                    "frame does not decode",
                    file=str(seg.path),
                    offset=loc.offset,
                    first_lsn=loc.first_lsn,
                    last_lsn=loc.last_lsn,
                )
            # The run ended before to_lsn: the next frame is in the next run or segment.
            loc = self._locate(expected)

    def seek_time(self, wall_ns: int) -> int | None:
        """First LSN written at or after ``wall_ns`` (nanoseconds since the epoch), or None."""
        lsn = self._index.first_lsn_at_or_after(wall_ns)
        if lsn is None:
            return None
        loc = self._index.locate(lsn)
        wrong = (
            loc is None
            or loc.first_lsn != lsn
            or loc.wall_ns < wall_ns
            or self._state.fence.is_void(loc.epoch, loc.first_lsn)
        )
        if wrong and not self._rechecked:
            self._rebuild()  # the time entry names no frame that fits: it was wrong
            return self._index.first_lsn_at_or_after(wall_ns)
        return lsn

    def follow(
        self,
        from_lsn: int | None = None,
        *,
        poll_interval: float = 0.02,
        idle_timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Record]:
        """Every record from ``from_lsn`` on, waiting for new ones as another process appends.

        Ends when ``stop()`` returns true or no new record arrived for ``idle_timeout`` seconds.
        """
        lsn = self.first_lsn if from_lsn is None else from_lsn
        idle_since = time.monotonic()
        while stop is None or not stop():
            if lsn <= self.last_lsn:
                for record in self.records(lsn, self.last_lsn):
                    yield record
                    lsn = record.lsn + 1
                idle_since = time.monotonic()
                continue
            if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                return
            time.sleep(poll_interval)
            self.refresh()

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint whose header is sound, oldest first (damaged ones are left out)."""
        return checkpoint_infos(self.path, self._index)

    def load_checkpoint(self, lsn: int, *, allow_pickle: bool = False) -> Any:
        """The state stored in the checkpoint at ``lsn``."""
        for found_lsn, path in list_checkpoint_files(self.path):
            if found_lsn == lsn:
                return decode_checkpoint(
                    path.read_bytes(), allow_pickle=allow_pickle, where=str(path)
                )
        raise CheckpointError(f"{self.path}: no checkpoint at LSN {lsn}")

    def newest_checkpoint(
        self,
        *,
        at_or_below: int | None = None,
        allow_pickle: bool = False,
        failed: list[CheckpointError] | None = None,
    ) -> tuple[int, Any, list[CheckpointError]] | None:
        """The newest checkpoint that loads (at or below an LSN), skipping damaged ones.

        Returns (lsn, state, errors of the newer checkpoints that were skipped), or None when no
        checkpoint loads. A pickled checkpoint without ``allow_pickle`` is an error, not a skip.
        ``failed``, if given, receives the same errors, also when None is returned (so a caller
        can say which checkpoints did not load).
        """
        skipped: list[CheckpointError] = [] if failed is None else failed
        for lsn, path in reversed(list_checkpoint_files(self.path)):
            if at_or_below is not None and lsn > at_or_below:
                continue
            try:
                state = decode_checkpoint(
                    path.read_bytes(), allow_pickle=allow_pickle, where=str(path)
                )
            except CheckpointError as exc:
                if type(exc) is not CheckpointError:
                    raise
                skipped.append(exc)
                continue
            return lsn, state, skipped
        return None

    # -- statistics --------------------------------------------------------------------------------

    def stats(self) -> LogStats:
        """Counts and sizes over the whole log (reads every frame's header via the index)."""
        frames = 0
        stored = 0
        raw = 0
        first_wall: int | None = None
        last_wall: int | None = None
        for loc in self._index.all_frames():
            frames += 1
            stored += loc.stored_size + HEADER_SIZE
            raw += loc.raw_size + HEADER_SIZE
            first_wall = loc.wall_ns if first_wall is None else first_wall
            last_wall = loc.wall_ns
        return LogStats(
            self.first_lsn,
            self.last_lsn,
            frames,
            len(self._segments),
            stored,
            raw,
            first_wall,
            last_wall,
        )

    # -- internals -------------------------------------------------------------------------------

    def _locate(self, lsn: int) -> FrameLoc:
        if lsn < self.first_lsn:
            raise LsnOutOfRangeError(f"LSN {lsn} is below the log's first LSN {self.first_lsn}")
        loc = self._index.locate(lsn)
        if loc is None:
            self.refresh()
            loc = self._index.locate(lsn)
        if loc is None and lsn <= self.last_lsn and self._index_was_wrong(lsn):
            loc = self._index.locate(lsn)  # the index had lost the entry: rebuilt, look again
        if loc is not None:
            return loc
        for file, d in self._state.damage:
            if d.kind != "torn-tail" and d.first_lsn is not None and lsn >= d.first_lsn:
                raise CorruptLogError(
                    d.reason,
                    file=str(file),
                    offset=d.offset,
                    first_lsn=d.first_lsn,
                    last_lsn=d.last_lsn,
                )
        raise LsnOutOfRangeError(
            f"LSN {lsn} is beyond the log's last LSN {self.last_lsn}"
            if lsn > self.last_lsn
            else f"LSN {lsn} is not in the log"
        )

    def _index_was_wrong(self, lsn: int) -> bool:
        """Bytes at the index's location for ``lsn`` were not the frame it promised (or it has no
        location): ask the segment itself. If the segment holds a sound frame with ``lsn`` that
        the index does not describe, the index was wrong: rebuild it and return True (the caller
        looks again). Else the segment really is damaged there: keep the index (it still knows
        the frames after the damage) and return False. A sound segment is never blamed for the
        cache's errors. Done once per reader; only damage pays for the scan."""
        if self._rechecked:
            return False
        self._rechecked = True
        fence = self._state.fence
        holder = [seg for seg in live_segments(self.path, fence) if seg.first_lsn <= lsn]
        if not holder:
            return False
        seg = holder[-1]
        try:
            with open(seg.path, "rb") as f:
                data = f.read()
        except OSError:
            return False
        result = scan_segment(
            data,
            start_offset=SEGMENT_HEADER_SIZE,
            expected_lsn=seg.first_lsn,
            is_last=True,
            stop_at_tail=True,
            fence=fence,
            zero_tail=may_have_zero_tail(data),
        )
        sound = next(
            (r for r in result.frames if r.header.first_lsn <= lsn <= r.header.last_lsn), None
        )
        if sound is None:
            return False
        known = self._index.locate(lsn)
        if (
            known is not None
            and known.segment == seg.first_lsn
            and known.offset == sound.offset
            and header_matches(sound.header, known)
        ):
            return False
        self._rebuild()
        return True

    def _rebuild(self) -> None:
        self._rechecked = True
        self._index.reset(self.meta.log_id)
        self._frames.clear()
        self._raw.clear()
        self.refresh()

    def _segment(self, first_lsn: int) -> SegmentFile:
        for seg in self._segments:
            if seg.first_lsn == first_lsn:
                return seg
        self._segments = live_segments(self.path, self._state.fence)
        for seg in self._segments:
            if seg.first_lsn == first_lsn:
                return seg
        raise LsnOutOfRangeError(f"segment {first_lsn} is gone (was the log trimmed?)")

    def _fd(self, seg: SegmentFile) -> int:
        fd = self._fds.get(seg.first_lsn)
        if fd is not None:
            self._fds.move_to_end(seg.first_lsn)
            return fd
        fd = os.open(seg.path, os.O_RDONLY)
        self._fds[seg.first_lsn] = fd
        if len(self._fds) > _OPEN_FILES:
            _old, old_fd = self._fds.popitem(last=False)
            os.close(old_fd)
        return fd

    def _load_raw(self, loc: FrameLoc) -> bytes:
        """The decompressed body of the frame at ``loc`` (checked; cached, most recent first)."""
        cached = self._raw.get(loc.first_lsn)
        if cached is not None:
            self._raw.move_to_end(loc.first_lsn)
            return cached
        seg = self._segment(loc.segment)
        buf = os.pread(self._fd(seg), HEADER_SIZE + loc.stored_size, loc.offset)
        try:
            frame = decode_frame(buf)
            if not header_matches(frame.header, loc):
                raise FrameError(
                    f"frame holds LSNs {frame.header.first_lsn}..{frame.header.last_lsn}, "
                    f"index says {loc.first_lsn}..{loc.last_lsn}"
                )
            if self._state.fence.is_void(frame.header.epoch, frame.header.first_lsn):
                raise FrameError(  # the index is wrong: it must never name a void frame
                    f"the index names a void frame (epoch {frame.header.epoch}, fenced out from "
                    f"LSN {self._state.fence.void_from(frame.header.epoch)})"
                )
            raw = raw_body(frame.header, frame.body)
        except (FrameError, FormatVersionError) as exc:
            raise self._corrupt(loc, str(exc)) from exc
        self._raw[loc.first_lsn] = raw
        if len(self._raw) > _FRAME_CACHE:
            self._raw.popitem(last=False)
        return raw

    def _load(self, loc: FrameLoc) -> list[Any]:
        """Every record of the frame at ``loc``, decoded."""
        raw = self._load_raw(loc)
        return self._decode(loc, lambda: unpack_values(raw, loc.record_count))

    def _corrupt(self, loc: FrameLoc, reason: str) -> CorruptLogError:
        return CorruptLogError(
            reason,
            file=str(self._segment(loc.segment).path),
            offset=loc.offset,
            first_lsn=loc.first_lsn,
            last_lsn=loc.last_lsn,
        )

    def _decode(self, loc: FrameLoc, decode: Callable[[], list[Any]]) -> list[Any]:
        cached = self._frames.get(loc.first_lsn)
        if cached is not None:
            return cached[1]
        try:
            values = decode()
        except (FrameError, ValueCodecError) as exc:
            raise self._corrupt(loc, str(exc)) from exc
        self._frames[loc.first_lsn] = (loc, values)
        if len(self._frames) > _FRAME_CACHE:
            self._frames.popitem(last=False)
        return values

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._index.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
