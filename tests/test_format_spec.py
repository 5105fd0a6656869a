"""FORMAT.md is enough: an independent reader agrees with logformat on checked-in bytes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from logformat import FormatVersionError, LogReader, LogWriter, _segment, verify_log
from tests import spec_reader
from tests.fixtures.make_logformat_fixtures import WALL0, records
from tests.logutil import new_meta
from tests.strategies import records as record_lists

FIXTURES = Path(__file__).parent / "fixtures" / "log"
FORMAT_MD = Path(__file__).parent.parent / "logformat" / "FORMAT.md"


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def test_the_spec_reader_reads_the_version_1_fixture() -> None:
    got = spec_reader.read_log(FIXTURES / "v1-basic")
    assert [lsn for lsn, _ in got] == list(range(1, 41))
    assert [value for _, value in got] == records()
    assert spec_reader.read_checkpoint(
        FIXTURES / "v1-basic" / "checkpoints" / "00000000000000000012.ckpt"
    ) == (12, {"count": 12, "seen": (1, 2)})


def test_logformat_reads_the_fixture_identically(tmp_path: Path) -> None:
    log = _copy("v1-basic", tmp_path)
    with LogReader(log) as reader:
        mine = [(r.lsn, r.value) for r in reader.records()]
        assert reader.read(1).wall_ns == WALL0
        assert reader.load_checkpoint(12) == {"count": 12, "seen": (1, 2)}
    assert mine == spec_reader.read_log(FIXTURES / "v1-basic")


def test_torn_tail_fixture_both_readers_stop_at_the_last_whole_frame(tmp_path: Path) -> None:
    spec = spec_reader.read_log(FIXTURES / "v1-torn-tail")
    log = _copy("v1-torn-tail", tmp_path)
    last = sorted(log.glob("*.seg"))[-1]
    part = spec_reader.read_segment(last.read_bytes())
    assert part.torn
    with LogReader(log) as reader:
        assert reader.last_lsn == spec[-1][0] == 30
    with LogWriter.open(log, sync=False) as writer:
        assert writer.next_lsn == 31
    assert last.stat().st_size == part.end


@settings(max_examples=30)
@given(record_lists)
def test_fresh_logs_agree_with_the_spec_reader(tmp_path_factory: Any, values: list[Any]) -> None:
    log = tmp_path_factory.mktemp("fresh") / "log"
    with LogWriter.open(log, create=new_meta(), sync=False, segment_size=256) as writer:
        for value in values:
            writer.append([value, value])
    expected = [(i + 1, v) for i, v in enumerate(x for value in values for x in (value, value))]
    assert spec_reader.read_log(log) == expected


def test_the_worked_example_in_format_md_is_the_fixture_byte_for_byte() -> None:
    text = FORMAT_MD.read_text()
    section = text[text.index("## 10. A worked example") :]
    dump = section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]
    hex_bytes = "".join(
        re.sub(r"^[0-9a-f]{4}\s+", "", line.strip()) for line in dump.strip().splitlines()
    )
    from_doc = bytes.fromhex(hex_bytes.replace(" ", ""))
    assert from_doc == (FIXTURES / "frame-example.bin").read_bytes()
    frame, end = spec_reader.read_frame(from_doc, 0) or (None, 0)
    assert frame is not None and end == 59
    assert frame.records == [{"m": "inc", "a": [7]}]
    assert frame.wall_ns == 1795000000000000000


# -- version 3: preallocated segments with a zero tail (FORMAT.md 3.1) -----------------------------


def test_the_spec_reader_reads_the_version_3_fixture_as_the_version_1_one() -> None:
    got = spec_reader.read_log(FIXTURES / "v3-basic")
    assert got == spec_reader.read_log(FIXTURES / "v1-basic")
    for seg in sorted((FIXTURES / "v3-basic").glob("*.seg")):
        part = spec_reader.read_segment(seg.read_bytes())
        assert part.zero_tail and not part.torn
        assert part.end < seg.stat().st_size  # there is a zero tail, and it is not data


def test_logformat_reads_the_version_3_fixture_identically(tmp_path: Path) -> None:
    log = _copy("v3-basic", tmp_path)
    with LogReader(log) as reader:
        mine = [(r.lsn, r.value) for r in reader.records()]
        assert reader.read(1).wall_ns == WALL0
        assert reader.load_checkpoint(12) == {"count": 12, "seen": (1, 2)}
        assert reader.damage == []
    assert mine == spec_reader.read_log(FIXTURES / "v3-basic")
    report = verify_log(log)
    assert report.ok and report.records == 40, [d.describe() for d in report.damaged]
    sizes = {p.name: p.stat().st_size for p in log.glob("*.seg")}
    with LogWriter.open(log, sync=False) as writer:  # nothing to cut: appends over the zeros
        assert writer.recovery is not None and writer.recovery.truncated is None
        writer.append([{"after": 1}])
    assert {p.name: p.stat().st_size for p in log.glob("*.seg")} == sizes
    assert spec_reader.read_log(log)[-1] == (41, {"after": 1})


def test_version_3_torn_tail_fixture_both_readers_stop_at_the_last_whole_frame(
    tmp_path: Path,
) -> None:
    spec = spec_reader.read_log(FIXTURES / "v3-torn-tail")
    log = _copy("v3-torn-tail", tmp_path)
    last = sorted(log.glob("*.seg"))[-1]
    part = spec_reader.read_segment(last.read_bytes())
    assert part.torn and not part.zero_tail
    with LogReader(log) as reader:
        assert reader.last_lsn == spec[-1][0] == 30
    with LogWriter.open(log, sync=False) as writer:
        assert writer.next_lsn == 31
        assert writer.recovery is not None and writer.recovery.truncated is not None
    assert last.stat().st_size == part.end  # cut, zero tail and all


def test_a_version_3_log_needs_a_version_3_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers of version 2 knew no zero tail: the metadata and the segments both refuse them."""
    log = _copy("v3-basic", tmp_path)
    assert json.loads((log / "meta.json").read_text())["format_version"] == 3
    head = sorted(log.glob("*.seg"))[0].read_bytes()[:32]
    monkeypatch.setattr(_segment, "SEGMENT_READ_VERSION", 1)  # a reader of segment version 1
    with pytest.raises(FormatVersionError, match="reader version 2"):
        _segment.parse_segment_header(head)
    monkeypatch.undo()
    meta = json.loads((log / "meta.json").read_text())
    (log / "meta.json").write_text(json.dumps({**meta, "format_version": 4}))
    with pytest.raises(FormatVersionError, match="knows up to 3"):
        LogReader(log)
    with pytest.raises(spec_reader.SpecError):
        spec_reader.read_log(log)


@settings(max_examples=30)
@given(record_lists)
def test_fresh_preallocated_logs_agree_with_the_spec_reader(
    tmp_path_factory: Any, values: list[Any]
) -> None:
    log = tmp_path_factory.mktemp("fresh") / "log"
    with LogWriter.open(
        log, create=new_meta(), sync=False, segment_size=256, preallocate=100
    ) as writer:
        for value in values:
            writer.append([value, value])
    expected = [(i + 1, v) for i, v in enumerate(x for value in values for x in (value, value))]
    assert spec_reader.read_log(log) == expected
