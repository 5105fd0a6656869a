"""Small helpers shared by the log tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from logformat import LogMeta, LogReader, LogWriter


def new_meta() -> LogMeta:
    """Metadata for a new log (each log gets its own id, as in real use)."""
    return LogMeta("server", "samples/counter/counter.py:Server", "v1")


def record(i: int) -> dict[str, Any]:
    """An RPC-shaped record whose content depends on ``i`` (so any mix-up shows)."""
    return {"k": "call", "from": f"client-{i % 3}", "seq": i, "m": "inc", "a": [i, "x" * (i % 17)]}


def write_log(
    path: Path, groups: list[int], *, segment_size: int = 1 << 20, start_ns: int = 1_000
) -> list[Any]:
    """Append ``groups[i]`` records per append (one frame each); return every value written."""
    values: list[Any] = []
    with LogWriter.open(path, create=new_meta(), sync=False, segment_size=segment_size) as writer:
        for n, size in enumerate(groups):
            batch = [record(len(values) + j + 1) for j in range(size)]
            writer.append(batch, wall_ns=start_ns + n * 1_000)
            values.extend(batch)
    return values


def read_all(path: Path) -> list[Any]:
    with LogReader(path) as reader:
        return [r.value for r in reader.records()]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def frame_offsets(path: Path) -> list[tuple[Path, int, int]]:
    """(segment, offset, size) of every frame, from the index-free verifier's point of view."""
    from logformat._segment import SEGMENT_HEADER_SIZE, scan_segment

    out = []
    expected = 1
    for seg in segments(path):
        data = seg.read_bytes()
        result = scan_segment(
            data, start_offset=SEGMENT_HEADER_SIZE, expected_lsn=expected, is_last=True
        )
        for ref in result.frames:
            out.append((seg, ref.offset, ref.header.frame_size))
        expected = result.next_lsn
    return out
