"""FORMAT.md is enough: an independent reader agrees with logformat on checked-in bytes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from hypothesis import given, settings

from logformat import LogReader, LogWriter
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
