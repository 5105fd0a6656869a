"""What a log directory holds on disk, and the one routine that brings the index up to date.

Both the writer and the readers call :func:`catch_up`: it validates the index against the
segments, rebuilds it when it cannot be trusted, and scans whatever frames lie past its
``covered`` mark. The damage it meets is returned, not raised: what damage means depends on who
asks (the writer cuts a torn tail, a reader waits at it, ``verify`` reports it).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ._checkpoint import (
    CHECKPOINT_HEADER_SIZE,
    CheckpointInfo,
    list_checkpoint_files,
    read_checkpoint_info,
)
from ._errors import CheckpointError, FormatVersionError, FrameError
from ._fence import BEGIN, Fence, read_fence
from ._frame import HEADER_SIZE, FrameHeader, check_body, parse_header
from ._index import Coverage, FrameLoc, LogIndex
from ._meta import META_NAME, LogMeta
from ._segment import (
    SEGMENT_HEADER_SIZE,
    Damage,
    may_have_zero_tail,
    parse_segment_header,
    parse_segment_name,
    scan_segment,
)

_INDEX_BATCH = 20_000  # frames per index transaction while catching up


@dataclass(frozen=True, slots=True)
class SegmentFile:
    first_lsn: int
    path: Path


@dataclass(slots=True)
class CatchUp:
    """The result of bringing the index up to the segments."""

    next_lsn: int
    max_epoch: int
    last_wall_ns: int
    end_segment: SegmentFile | None
    end_offset: int
    damage: list[tuple[Path, Damage]] = field(default_factory=list)
    rebuilt: bool = False
    frames_scanned: int = 0
    fence: Fence = field(default_factory=Fence)
    void_tail: bool = False
    """The scan of ``end_segment`` stopped at void bytes: the segment must not be appended to."""
    proven_end: int = 0
    """How far ``end_segment``'s bytes were read and found to be sound frames up to
    ``end_offset`` and zeros after it (FORMAT.md 3.1): a writer may append at ``end_offset`` only
    if the file is no longer than this, so it never writes after bytes it has not seen are zero."""


def list_segments(log_dir: Path) -> list[SegmentFile]:
    """Every segment file, void or not, by first LSN (for the rule, see :func:`live_segments`)."""
    found = []
    for entry in log_dir.iterdir():
        first = parse_segment_name(entry.name)
        if first is not None:
            found.append(SegmentFile(first, entry))
    return sorted(found, key=lambda s: s.first_lsn)


def live_segments(log_dir: Path, fence: Fence) -> list[SegmentFile]:
    """The segments of the log, by first LSN, leaving out those a fenced-out writer made.

    A segment whose first frame is void (its header holds, and its epoch was fenced out at or
    before its LSN) was created by a zombie after a takeover: it is not part of the log, not a
    gap, and never the newest segment to append to. Every reader lists segments through here.
    Without begins in the fence this is the plain listing, with no reads.
    """
    segments = list_segments(log_dir)
    lowest = fence.lowest_begin
    if lowest is None:
        return segments
    return [s for s in segments if s.first_lsn < lowest or not _first_frame_void(s, fence)]


def _first_frame_void(seg: SegmentFile, fence: Fence) -> bool:
    try:
        with open(seg.path, "rb") as f:
            f.seek(SEGMENT_HEADER_SIZE)
            head = f.read(HEADER_SIZE)
        header = parse_header(head, 0)
    except (OSError, FrameError, FormatVersionError):
        return False
    return fence.is_void(header.epoch, header.first_lsn)


def sync_index_with_fence(index: LogIndex, fence: Fence, log_id: str) -> bool:
    """Drop index entries that a fence grown since the index last saw it made void.

    The index stores how many fence entries it honours and their CRC. If the fence only grew,
    entries from the lowest LSN a new ``begin`` names are dropped (they may describe a zombie's
    frames, indexed while they still counted) and catch-up rescans them with the void rule; if
    the fence is not an extension of the one the index saw, the index is reset (True: rebuild).
    """
    mark = index.fence_mark()
    count = len(fence.entries)
    if mark is None:
        if count == 0:
            return False
        known = 0
    else:
        known, crc = mark
        if known == count and crc == fence.crc:
            return False
        if known > count or _prefix_crc(fence, known) != crc:
            index.reset(log_id)
            index.set_fence_mark(count, fence.crc)
            return True
    new_begins = [e.lsn for e in fence.entries[known:] if e.kind == BEGIN]
    if new_begins:
        index.truncate_from(min(new_begins))
    index.set_fence_mark(count, fence.crc)
    return False


def _prefix_crc(fence: Fence, count: int) -> int:
    return zlib.crc32(b"".join(e.encode() for e in fence.entries[:count]))


def read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def segment_may_have_zero_tail(path: Path) -> bool:
    """Whether the segment at ``path`` has a sound version-2 header (FORMAT.md 3.1)."""
    try:
        with open(path, "rb") as f:
            return may_have_zero_tail(f.read(SEGMENT_HEADER_SIZE))
    except OSError:
        return False


def segment_header_damage(seg: SegmentFile, data: bytes, *, is_last: bool) -> Damage | None:
    """Damage if the segment's own header is missing, broken, or names another LSN.

    ``data`` is the segment's bytes from its start (the whole file, or at least its header). The
    newest segment holding no more than a header that does not check out is a torn tail: the
    writer was creating it when it stopped, so it holds no records yet.
    """
    try:
        header = parse_segment_header(data[:SEGMENT_HEADER_SIZE])
    except FrameError as exc:
        if is_last and len(data) <= SEGMENT_HEADER_SIZE:
            reason = f"new segment's header is torn ({exc})"
            return Damage("torn-tail", 0, len(data), seg.first_lsn, None, reason)
        end = min(len(data), SEGMENT_HEADER_SIZE)
        return Damage("bad-segment-header", 0, end, seg.first_lsn, None, str(exc))
    if header.first_lsn != seg.first_lsn:
        return Damage(
            "bad-segment-header",
            0,
            SEGMENT_HEADER_SIZE,
            seg.first_lsn,
            None,
            f"segment header says LSN {header.first_lsn}, its name says {seg.first_lsn}",
        )
    return None


def bound_by_next_segment(damage: Damage, following: SegmentFile | None) -> Damage:
    """Damage in a segment that is not the newest ends, at the latest, where the next one starts."""
    if (
        following is None
        or damage.last_lsn is not None
        or damage.first_lsn is None
        or following.first_lsn <= damage.first_lsn
    ):
        return damage
    return dataclasses.replace(damage, last_lsn=following.first_lsn - 1)


def _check_mark(
    index: LogIndex,
    cov: Coverage,
    segments: list[SegmentFile],
    *,
    whole_frame: bool,
    fence: Fence,
) -> bool | Damage:
    """Whether the ``covered`` mark and the segment boundaries in the index match the segments.

    The index is written without fsync and may be damaged, so nothing in it is believed until the
    segments confirm it. The mark must name the last frame it covers exactly, and that frame's
    header, read from its segment, must say the same (one small read; ``whole_frame`` also checks
    the body): epochs and wall times never go down along a log, so the last frame also vouches
    for ``max_epoch`` and ``last_wall_ns``. Each segment boundary up to the mark must be one the
    index knows (the last frame before it in the previous segment, the first after it at the
    segment's start), or a segment the index covered was deleted or replaced.

    A mark naming a void frame (a zombie indexed it after a takeover) is not believed either.

    False means "rebuild". A Damage means the mark and its frame entry agree on a place whose
    bytes are no longer a sound frame: the frame was durable (the mark moves only after the
    fsync), so this is corruption of acknowledged records, not a torn tail to cut.
    """
    by_lsn = {s.first_lsn: s for s in segments}
    seg = by_lsn.get(cov.segment)
    if seg is None:
        return False
    try:
        if os.path.getsize(seg.path) < cov.end_offset:
            return False
    except OSError:
        return False
    for before, after in itertools.pairwise(segments):
        if after.first_lsn > cov.segment:
            break
        if (before.first_lsn, after.first_lsn) in index.known_boundaries:
            continue
        tail, head = index.locate(after.first_lsn - 1), index.locate(after.first_lsn)
        if (
            tail is None
            or tail.segment != before.first_lsn
            or head is None
            or head.segment != after.first_lsn
            or head.offset != SEGMENT_HEADER_SIZE
            or head.first_lsn != after.first_lsn
        ):
            return False
        index.known_boundaries.add((before.first_lsn, after.first_lsn))
    if cov.end_offset == SEGMENT_HEADER_SIZE:  # marked an empty first segment, nothing more
        return (
            cov.segment == segments[0].first_lsn == cov.next_lsn
            and cov.max_epoch == 0
            and index.first_lsn() is None
        )
    last = index.locate(cov.next_lsn - 1)
    if (
        last is None
        or last.segment != cov.segment
        or last.last_lsn != cov.next_lsn - 1
        or last.offset + HEADER_SIZE + last.stored_size != cov.end_offset
        or last.epoch != cov.max_epoch
        or last.wall_ns != cov.last_wall_ns
        or fence.is_void(last.epoch, last.first_lsn)
    ):
        return False
    try:
        with open(seg.path, "rb") as f:
            f.seek(last.offset)
            data = f.read(HEADER_SIZE + last.stored_size if whole_frame else HEADER_SIZE)
    except OSError:
        return False
    try:
        header = parse_header(data, 0)
        if whole_frame:
            check_body(header, data[HEADER_SIZE:])
    except (FrameError, FormatVersionError) as exc:
        return Damage(
            "corrupt",
            last.offset,
            cov.end_offset,
            last.first_lsn,
            last.last_lsn,
            f"{exc} (the index knew this frame as sound)",
        )
    return header_matches(header, last)


def header_matches(header: FrameHeader, loc: FrameLoc) -> bool:
    return (
        header.first_lsn == loc.first_lsn
        and header.record_count == loc.record_count
        and header.epoch == loc.epoch
        and header.wall_ns == loc.wall_ns
        and header.stored_size == loc.stored_size
        and header.raw_size == loc.raw_size
    )


def missing_records(
    log_dir: Path,
    meta: LogMeta,
    next_lsn: int,
    *,
    checkpoints: list[tuple[int, Path]] | None = None,
) -> tuple[Path, Damage] | None:
    """Proof that records at or after ``next_lsn`` existed once, though no segment holds them.

    ``next_lsn`` is the LSN after the last sound record. A checkpoint file (sound or not: it got
    its name by a rename after its step was durable) at or beyond ``next_lsn``, or a code version
    that ``meta.json`` says began beyond it, can only exist if the log once reached further:
    the end of the newest segment, or the newest segments, were lost. Returns the file that
    proves it and the missing range (up to the highest LSN proved), or None.

    With a live writer, list ``checkpoints`` (and read ``meta``) *before* scanning the segments
    that gave ``next_lsn``: a checkpoint written after the scan may follow records it did not see.
    """
    proof: tuple[Path, int, str] | None = None
    listed = list_checkpoint_files(log_dir) if checkpoints is None else checkpoints
    for lsn, path in listed:
        if lsn >= next_lsn and (proof is None or lsn > proof[1]):
            proof = (path, lsn, f"{path.name} holds the state after step {lsn}")
    for version in meta.versions:
        last = version.from_lsn - 1
        if last >= next_lsn and (proof is None or last > proof[1]):
            where = log_dir / META_NAME
            proof = (
                where,
                last,
                f"{META_NAME} says code version {version.code_version!r} "
                f"began at LSN {version.from_lsn}",
            )
    if proof is None:
        return None
    path, last, why = proof
    return path, Damage(
        "missing",
        0,
        0,
        next_lsn,
        last,
        f"the log ends at LSN {next_lsn - 1}, but {why}",
    )


def catch_up(
    log_dir: Path,
    index: LogIndex,
    log_id: str,
    *,
    whole_frame: bool = False,
    fence: Fence | None = None,
) -> CatchUp:
    """Make the index cover every sound frame; return where the sound log ends and any damage.

    ``whole_frame`` (the writer) checks the body of the last frame the index covers too, not only
    its header: the writer's position must come from a frame the segment proves whole. Void
    frames (FORMAT.md 8.1) end their segment's scan quietly; ``fence`` is read when not given.
    """
    if fence is None:
        fence = read_fence(log_dir)
    rebuilt = index.log_id() == log_id and sync_index_with_fence(index, fence, log_id)
    # Read the mark before listing the segments: a writer in another process may roll over to a
    # new segment at any moment, and a mark naming a segment the listing has not seen yet would
    # look untrustworthy, wiping a sound index under a live writer.
    cov = index.coverage()
    segments = live_segments(log_dir, fence)
    mark = (
        True
        if cov is None
        else _check_mark(index, cov, segments, whole_frame=whole_frame, fence=fence)
    )
    if index.log_id() != log_id or mark is False:
        index.reset(log_id)
        index.set_fence_mark(len(fence.entries), fence.crc)
        rebuilt = True
        cov = None
        segments = live_segments(log_dir, fence)  # every frame indexed before the reset is listed
    elif segments and (first := index.first_lsn()) is not None and first < segments[0].first_lsn:
        index.drop_below(segments[0].first_lsn)  # a trim stopped before the index followed
    if not segments:
        return CatchUp(1, 0, 0, None, 0, rebuilt=rebuilt, fence=fence)
    if cov is None:
        start = 0
        offset = 0
        state = CatchUp(segments[0].first_lsn, 0, 0, segments[0], 0, rebuilt=rebuilt, fence=fence)
    else:
        start = next(i for i, s in enumerate(segments) if s.first_lsn == cov.segment)
        offset = cov.end_offset
        state = CatchUp(
            cov.next_lsn,
            cov.max_epoch,
            cov.last_wall_ns,
            segments[start],
            offset,
            rebuilt=rebuilt,
            fence=fence,
        )
        if isinstance(mark, Damage):
            state.damage.append((segments[start].path, mark))
            return state
    for i in range(start, len(segments)):
        seg = segments[i]
        is_last = i == len(segments) - 1
        following = None if is_last else segments[i + 1]
        prev_epoch: int | None = state.max_epoch  # resuming after the mark's frame
        if i > start or cov is None:
            offset = 0
            prev_epoch = None
        buf = read_from(seg.path, offset)
        zero_tail = may_have_zero_tail(buf) if offset == 0 else segment_may_have_zero_tail(seg.path)
        if offset == 0:
            bad = segment_header_damage(seg, buf, is_last=is_last)
            if bad is not None:
                state.damage.append((seg.path, bound_by_next_segment(bad, following)))
                return state
            if seg.first_lsn != state.next_lsn:
                state.damage.append(
                    (
                        seg.path,
                        segment_gap(seg, state.next_lsn),
                    )
                )
                return state
            offset = SEGMENT_HEADER_SIZE
            buf = buf[SEGMENT_HEADER_SIZE:]
            state.end_segment, state.end_offset = seg, offset
        result = scan_segment(
            buf,
            start_offset=0,
            expected_lsn=state.next_lsn,
            is_last=is_last,
            fence=fence,
            prev_epoch=prev_epoch if offset > SEGMENT_HEADER_SIZE else None,
            zero_tail=zero_tail,
        )
        locs = []
        for ref in result.frames:
            h = ref.header
            locs.append(
                FrameLoc(
                    h.first_lsn,
                    seg.first_lsn,
                    offset + ref.offset,
                    h.record_count,
                    h.epoch,
                    h.wall_ns,
                    h.stored_size,
                    h.raw_size,
                )
            )
            state.max_epoch = max(state.max_epoch, h.epoch)
            state.last_wall_ns = max(state.last_wall_ns, h.wall_ns)
        state.frames_scanned += len(locs)
        state.next_lsn = result.next_lsn
        state.end_segment, state.end_offset = seg, offset + result.end_offset
        state.void_tail = result.void_at is not None
        whole = not result.damage and result.void_at is None
        state.proven_end = offset + len(buf) if whole else state.end_offset
        for j in range(0, len(locs), _INDEX_BATCH):
            chunk = locs[j : j + _INDEX_BATCH]
            last = chunk[-1]
            index.add(
                chunk,
                Coverage(
                    seg.first_lsn,
                    last.offset + HEADER_SIZE + last.stored_size,
                    last.last_lsn + 1,
                    state.max_epoch,
                    state.last_wall_ns,
                ),
            )
        if not locs and cov is None and i == start:
            index.add(
                [],
                Coverage(seg.first_lsn, state.end_offset, state.next_lsn, state.max_epoch, 0),
            )
        for d in result.damage:
            state.damage.append((seg.path, bound_by_next_segment(_shift(d, offset), following)))
        if result.damage:
            return state
    return state


def checkpoint_infos(log_dir: Path, index: LogIndex) -> list[CheckpointInfo]:
    """Sound checkpoints, oldest first, with their headers cached in the index.

    The directory listing is the truth (a checkpoint is a file); the index only saves reading
    every header again. An entry whose file changed size, or disappeared, is refreshed.
    """
    cached = index.checkpoints()
    infos: list[CheckpointInfo] = []
    for lsn, path in list_checkpoint_files(log_dir):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        summary = cached.get(lsn)
        if summary is not None:
            codec, created, raw, stored = _SUMMARY.unpack(summary)
            if CHECKPOINT_HEADER_SIZE + stored == size:
                infos.append(CheckpointInfo(lsn, path, codec, created, raw, stored))
                continue
        try:
            infos.append(read_checkpoint_info(path))
        except CheckpointError:
            continue  # damaged: never listed as usable
    fresh = {
        i.lsn: _SUMMARY.pack(i.state_codec, i.created_ns, i.raw_size, i.stored_size) for i in infos
    }
    if fresh != cached:
        index.set_checkpoints(fresh)
    return infos


_SUMMARY = struct.Struct("<BqQQ")  # state codec, created_ns, raw size, stored size


def segment_gap(seg: SegmentFile, expected: int) -> Damage:
    """A segment that does not start where the previous one ended: the segments between are lost
    (or, when it starts too early, segments overlap, which is damage of another kind)."""
    if seg.first_lsn > expected:
        return Damage(
            "missing",
            0,
            0,
            expected,
            seg.first_lsn - 1,
            f"segment starts at LSN {seg.first_lsn}, but the one before ends at LSN "
            f"{expected - 1}: a segment between them was lost",
        )
    return Damage(
        "lsn-gap",
        0,
        0,
        expected,
        None,
        f"segment starts at LSN {seg.first_lsn}, expected {expected}",
    )


def _shift(d: Damage, by: int) -> Damage:
    return Damage(d.kind, d.offset + by, d.end_offset + by, d.first_lsn, d.last_lsn, d.reason)
