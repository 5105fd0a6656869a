"""``verify``: read every byte of a log without trusting the index, and report each damaged range.

Unlike the reader, which stops at the first damage, verification resynchronises after it and
keeps going, so one report names every damaged range with its file, byte offsets and LSNs.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from ._checkpoint import decode_checkpoint, list_checkpoint_files
from ._errors import CheckpointError, FormatVersionError, FrameError, PickleRefusedError
from ._fence import NO_FENCE, Fence, FenceCorruptError, read_fence
from ._files import (
    bound_by_next_segment,
    live_segments,
    missing_records,
    segment_gap,
    segment_header_damage,
)
from ._frame import HEADER_SIZE, decode_body
from ._meta import LogMeta, read_meta
from ._segment import SEGMENT_HEADER_SIZE, Damage, may_have_zero_tail, scan_segment
from ._writer import LOCK_NAME


@dataclass(frozen=True, slots=True)
class DamagedRange:
    """One damaged stretch, located for a person to find."""

    file: Path
    damage: Damage

    def describe(self) -> str:
        d = self.damage
        if d.first_lsn is None:
            lsns = "LSNs unknown"
        elif d.last_lsn is None:
            lsns = f"LSN {d.first_lsn} onward"
        elif d.last_lsn == d.first_lsn:
            lsns = f"LSN {d.first_lsn}"
        else:
            lsns = f"LSNs {d.first_lsn}..{d.last_lsn}"
        span = (
            f"bytes {d.offset}..{d.end_offset}" if d.end_offset > d.offset else f"byte {d.offset}"
        )
        if d.kind == "missing":
            return f"missing: {lsns} ({self.file.name} proves they existed): {d.reason}"
        return f"{d.kind}: {self.file.name} {span}, {lsns}: {d.reason}"


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :func:`verify_log`. ``ok`` is true when nothing is damaged."""

    path: Path
    meta: LogMeta
    segments: int = 0
    frames: int = 0
    records: int = 0
    first_lsn: int = 1
    last_lsn: int = 0
    checkpoints: int = 0
    live_writer: bool = False
    damaged: list[DamagedRange] = field(default_factory=list)
    bad_checkpoints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.bad_checkpoints


def writer_is_live(log_dir: Path) -> bool:
    """Whether a live process holds the log's writer lock right now."""
    try:
        fd = os.open(log_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def verify_log(path: str | os.PathLike[str]) -> VerifyReport:
    """Check every frame (header, checksum, LSN order, body decoding) and every checkpoint."""
    log_dir = Path(path)
    report = VerifyReport(log_dir, read_meta(log_dir))
    report.live_writer = writer_is_live(log_dir)
    # Listed before the segments are read: a live writer's newer checkpoint would otherwise
    # look like proof of records lost, when they were merely appended after the scan.
    checkpoints = list_checkpoint_files(log_dir)
    fence: Fence = NO_FENCE
    try:
        fence = read_fence(log_dir)
    except FenceCorruptError as exc:
        # Which writers are void is unknown: say so, and read the segments with no fence.
        damage = Damage("corrupt", exc.offset, exc.offset, None, None, exc.reason)
        report.damaged.append(DamagedRange(Path(exc.file), damage))
    segments = live_segments(log_dir, fence)
    report.segments = len(segments)
    expected = segments[0].first_lsn if segments else 1
    report.first_lsn = expected
    for i, seg in enumerate(segments):
        is_last = i == len(segments) - 1
        data = seg.path.read_bytes()
        following = None if is_last else segments[i + 1]
        bad_header = segment_header_damage(seg, data, is_last=is_last)
        if bad_header is not None:
            if not (bad_header.kind == "torn-tail" and report.live_writer):
                bad_header = bound_by_next_segment(bad_header, following)
                report.damaged.append(DamagedRange(seg.path, bad_header))
            expected = following.first_lsn if following is not None else expected
            continue
        if seg.first_lsn != expected:
            report.damaged.append(DamagedRange(seg.path, segment_gap(seg, expected)))
            expected = seg.first_lsn
        offset = SEGMENT_HEADER_SIZE
        last_epoch: int | None = None
        zero_tail = may_have_zero_tail(data)
        while True:
            result = scan_segment(
                data,
                start_offset=offset,
                expected_lsn=expected,
                is_last=is_last,
                fence=fence,
                prev_epoch=last_epoch if offset > SEGMENT_HEADER_SIZE else None,
                zero_tail=zero_tail,
            )
            for ref in result.frames:
                last_epoch = ref.header.epoch
                report.frames += 1
                report.records += ref.header.record_count
                try:
                    body = data[ref.offset + HEADER_SIZE : ref.offset + ref.header.frame_size]
                    decode_body(ref.header, body)
                except (FrameError, FormatVersionError) as exc:
                    h = ref.header
                    report.damaged.append(
                        DamagedRange(
                            seg.path,
                            Damage(
                                "corrupt",
                                ref.offset,
                                ref.offset + h.frame_size,
                                h.first_lsn,
                                h.last_lsn,
                                str(exc),
                            ),
                        )
                    )
            expected = result.next_lsn
            if not result.damage:
                break
            found = result.damage[-1]
            if found.kind == "torn-tail" and report.live_writer:
                break  # a frame being written right now, not damage
            damage = bound_by_next_segment(found, following)
            report.damaged.append(DamagedRange(seg.path, damage))
            if found.kind == "lsn-gap" and found.last_lsn is not None:
                expected = found.last_lsn + 1  # skip the missing LSNs, rescan the same frame
                offset = found.offset
                continue
            if damage.kind != "torn-tail" and damage.last_lsn is not None:
                expected = damage.last_lsn + 1
            if found.kind == "lsn-gap" or found.last_lsn is None or found.end_offset >= len(data):
                break
            offset = found.end_offset
    report.last_lsn = expected - 1
    lost = missing_records(log_dir, report.meta, expected, checkpoints=checkpoints)
    if lost is not None:
        report.damaged.append(DamagedRange(*lost))
    for lsn, ckpt in list_checkpoint_files(log_dir):
        report.checkpoints += 1
        try:
            decode_checkpoint(ckpt.read_bytes(), allow_pickle=False, where=str(ckpt))
        except PickleRefusedError:
            pass  # sound, merely not loadable without opting in
        except CheckpointError as exc:
            report.bad_checkpoints.append(f"checkpoint at LSN {lsn}: {exc}")
    return report
