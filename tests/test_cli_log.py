"""`immortals log info|dump|verify|trim`: what they print, and one clear line on bad input.

Most tests call ``main([...])`` in-process (fast); the ones about exit statuses, stderr and
pipes run the real ``immortals`` console script in a subprocess.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from logformat import LogReader, LogWriter, TrimRefusedError, trim_log
from runtime.cli import main
from tests.logutil import frame_offsets, new_meta, record, write_log

REPO = Path(__file__).resolve().parent.parent
FIRST_SEG = "00000000000000000001.seg"


def _immortals() -> list[str]:
    """The installed console script beside this interpreter, else the module it runs."""
    script = Path(sys.executable).parent / "immortals"
    if script.exists():
        return [str(script)]
    found = shutil.which("immortals")
    return [found] if found else [sys.executable, "-m", "runtime.cli"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_immortals(), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (asserting it is one line, no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("immortals: error: "), lines[0]
    return lines[0]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Instance ``server`` under ``tmp/home``: LSNs 1..12 in frames 1-3, 4-7, 8-12.

    Segment size 300 puts the first two frames in segment 1 and the third in segment 8.
    """
    path = tmp_path / "home" / "logs" / "server"
    write_log(path, [3, 4, 5], segment_size=300)
    with LogWriter.open(path, sync=False) as writer:
        writer.write_checkpoint(7, {"count": 7})
    return path


@pytest.fixture
def sliced(tmp_path: Path) -> Path:
    """One frame per segment (segments 1, 4, 8, 13, then an empty 19), checkpoints 3, 7, 12."""
    path = tmp_path / "sliced"
    write_log(path, [3, 4, 5, 6], segment_size=1)
    with LogWriter.open(path, sync=False, segment_size=1) as writer:
        for lsn in (3, 7, 12):
            writer.write_checkpoint(lsn, {"count": lsn})
    return path


def _flip_body_byte(log: Path, first_lsn: int) -> Path:
    """Flip one bit in the body of the frame starting at ``first_lsn``; returns its segment."""
    frames = frame_offsets(log)
    lsn = 1
    with LogReader(log) as reader:
        sizes = [loc.record_count for loc, _ in reader.frames(1, reader.last_lsn)]
    for (segment, offset, size), count in zip(frames, sizes, strict=True):
        if lsn == first_lsn:
            data = bytearray(segment.read_bytes())
            data[offset + size - 2] ^= 0x10  # inside the compressed body, past the header
            segment.write_bytes(bytes(data))
            return segment
        lsn += count
    raise AssertionError(f"no frame starts at LSN {first_lsn}")


class _Terminal(io.StringIO):
    """A captured stdout that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


# -- info -------------------------------------------------------------------------------------------


def test_info_text_names_the_instance_ranges_segments_and_checkpoints(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "info", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"log of server ({log})\n")
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines()[1:] if line[2] != " "}
    assert "samples/counter/counter.py:Server" in rows["app"]
    assert rows["code version"].endswith("v1 (since LSN 1)")
    assert rows["LSNs"].endswith("1..12 (12 records)")
    assert rows["frames"].endswith("  3")
    assert "1970-01-01T00:00:00.000+00:00 .. 1970-01-01T00:00:00.000+00:00" in rows["time"]
    assert "none (no process is writing)" in rows["writer"]
    assert f"{FIRST_SEG}" in out and "LSN 1..7" in out
    assert "00000000000000000008.seg" in out and "LSN 8..12" in out
    assert "LSN 7" in out and "msgpack" in out
    assert "history" not in rows and "damage" not in rows
    assert "\x1b[" not in out  # plain text when stdout is not a terminal


def test_info_json_by_instance_name_even_with_a_same_named_directory_here(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    (work / "server").mkdir(parents=True)  # not a log: the instance's log is meant
    monkeypatch.chdir(work)
    assert main(["--home", str(log.parent.parent), "log", "info", "server", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(log)
    assert (info["first_lsn"], info["last_lsn"], info["records"], info["frames"]) == (1, 12, 12, 3)
    assert [(s["name"], s["first_lsn"], s["last_lsn"]) for s in info["segments"]] == [
        (FIRST_SEG, 1, 7),
        ("00000000000000000008.seg", 8, 12),
    ]
    assert sum(s["bytes"] for s in info["segments"]) == sum(
        p.stat().st_size for p in log.glob("*.seg")
    )
    assert info["checkpoints"][0] | {"created": None} == {
        "lsn": 7,
        "bytes": info["checkpoints"][0]["bytes"],
        "state_bytes": info["checkpoints"][0]["state_bytes"],
        "codec": "msgpack",
        "pickled": False,
        "created": None,
    }
    assert info["raw_bytes"] > info["stored_bytes"] > 0
    assert info["compression_ratio"] == round(info["raw_bytes"] / info["stored_bytes"], 2)
    assert info["versions"] == [
        {
            "from_lsn": 1,
            "app": "samples/counter/counter.py:Server",
            "code_version": "v1",
            "code_kept": False,  # a log written by a test helper keeps no code
        }
    ]
    assert info["live_writer"] is False and info["damage_at_end"] == []


def test_info_shows_history_pickled_checkpoints_and_a_live_writer(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LogWriter.open(log, sync=False) as writer:
        writer.record_code_version("samples/counter/counter.py:Server", "v2")
        writer.append([record(13)])
        writer.write_checkpoint(13, {"count": 13}, use_pickle=True)
        assert main(["log", "info", str(log)]) == 0
        out = capsys.readouterr().out
    assert "v2 (since LSN 13)" in out
    assert "from LSN 1: samples/counter/counter.py:Server @ v1" in out
    assert "from LSN 13: samples/counter/counter.py:Server @ v2" in out
    assert "LSN 13" in out and "pickle (loading it runs code)" in out
    assert "live: a process holds the writer lock" in out


def test_info_reports_a_torn_tail(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    last = sorted(log.glob("*.seg"))[-1]
    with open(last, "ab") as f:
        f.write(b"half a frame")
    assert main(["log", "info", str(log), "--json"]) == 0
    damage = json.loads(capsys.readouterr().out)["damage_at_end"]
    assert [(d["kind"], d["first_lsn"], Path(d["file"]).name) for d in damage] == [
        ("torn-tail", 13, last.name)
    ]
    assert main(["log", "info", str(log)]) == 0
    assert "torn-tail" in capsys.readouterr().out


def test_info_of_an_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with LogWriter.open(tmp_path / "empty", create=new_meta(), sync=False):
        pass
    assert main(["log", "info", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "none yet (the next is LSN 1)" in out
    assert "checkpoints   none" in out


def test_info_uses_rich_on_a_terminal(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["log", "info", str(log)]) == 0
    out = terminal.getvalue()
    assert "│" in out and "1..12 (12 records)" in out


# -- dump -------------------------------------------------------------------------------------------


def test_dump_text_prints_one_record_a_line_in_range(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "dump", str(log), "--from", "4", "--to", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        [str(lsn), "1970-01-01T00:00:00.000+00:00", "e1"] for lsn in (4, 5, 6)
    ]
    assert lines[1].endswith(repr(record(5)))
    assert "\x1b[" not in "".join(lines)


def test_dump_json_keeps_meaning_of_non_json_types(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typed"
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    value = {
        "tuple": (1, "a"),
        "set": {3, 1, 2},
        "mixed": {1, "a"},
        "bytes": b"\x00\xff",
        "when": when,
        "day": when.date(),
        "money": Decimal("1.50"),
        "id": uuid.UUID(int=7),
        (1, 2): "tuple key",
        "big": 2**70,
    }
    with LogWriter.open(path, create=new_meta(), sync=False) as writer:
        writer.append([value, "plain"], wall_ns=1_700_000_000_123_456_789)
    assert main(["log", "dump", str(path), "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["lsn"] == 1 and first["epoch"] == 1
    assert first["wall_ns"] == 1_700_000_000_123_456_789
    assert first["time"] == "2023-11-14T22:13:20.123456+00:00"
    got = first["value"]
    assert got["tuple"] == [1, "a"]
    assert got["set"] == [1, 2, 3]
    assert sorted(got["mixed"], key=str) == [1, "a"]
    assert got["bytes"] == {"$bytes": "AP8="}
    assert got["when"] == "2024-05-06T07:08:09+00:00"
    assert got["day"] == "2024-05-06"
    assert got["money"] == "1.50"
    assert got["id"] == "00000000-0000-0000-0000-000000000007"
    assert got["(1, 2)"] == "tuple key"
    assert got["big"] == 2**70
    assert second["value"] == "plain"


def test_dump_is_coloured_on_a_terminal_only(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["log", "dump", str(log), "--json", "--from", "12"]) == 0
    line = terminal.getvalue().strip()
    assert "\x1b[" in line
    assert '"lsn"' in line and "12" in line


def test_dump_of_an_empty_range_says_what_the_log_holds(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "dump", str(log), "--from", "50"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "no records in LSN 50..end: the log holds LSN 1..12"


@pytest.mark.parametrize("index", ["kept", "deleted"])
def test_dump_stops_with_an_error_at_damage_in_the_middle(
    log: Path, index: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whether or not the index still covers the damaged frame, the dump never ends quietly."""
    _flip_body_byte(log, 4)
    if index == "deleted":
        shutil.rmtree(log / "index")
    assert main(["log", "dump", str(log)]) == 2
    captured = capsys.readouterr()
    assert [int(line.split()[0]) for line in captured.out.splitlines()] == [1, 2, 3]
    assert "(LSN 4..7)" in captured.err and FIRST_SEG in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    # Records before the damage are still there for the asking.
    assert main(["log", "dump", str(log), "--to", "3"]) == 0


def test_dump_follow_prints_records_as_they_are_appended(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def append_later() -> None:
        time.sleep(0.2)
        with LogWriter.open(log, sync=False) as writer:
            writer.append([record(13), record(14)])
            time.sleep(0.1)
            writer.append([record(15)])

    writer = threading.Thread(target=append_later)
    writer.start()
    try:
        assert main(["log", "dump", str(log), "--follow", "--from", "11", "--to", "15"]) == 0
    finally:
        writer.join()
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [11, 12, 13, 14, 15]
    assert lines[-1].endswith(repr(record(15)))


def test_dump_follow_stops_at_damage_instead_of_waiting_forever(log: Path) -> None:
    _flip_body_byte(log, 4)
    shutil.rmtree(log / "index")
    result = _cli("log", "dump", str(log), "--follow")
    assert result.returncode == 2
    assert "(LSN 4..7)" in _one_error_line(result)
    assert [int(line.split()[0]) for line in result.stdout.splitlines()] == [1, 2, 3]


def test_dump_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "big"
    write_log(path, [1000] * 3)  # far more output than a pipe buffers
    with subprocess.Popen(
        [*_immortals(), "log", "dump", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().split()[0] == "1"
        proc.stdout.close()  # like `| head -1`
        assert proc.wait(timeout=60) == 0
        assert proc.stderr.read() == ""


# -- verify -----------------------------------------------------------------------------------------


def test_verify_a_whole_log(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "verify", str(log)]) == 0
    assert capsys.readouterr().out == (
        f"{log}: whole: 12 records (LSN 1..12) in 3 frames, 2 segments; 1 checkpoint checked\n"
    )


def test_verify_names_the_damaged_range_and_says_what_to_do(log: Path) -> None:
    segment = _flip_body_byte(log, 4)
    result = _cli("log", "verify", str(log))
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{log}: DAMAGED: ")
    damaged = [line.strip() for line in lines if line.startswith("  ")]
    assert len(damaged) == 1
    assert damaged[0].startswith(f"corrupt: {segment.name} bytes ")
    assert ", LSNs 4..7: " in damaged[0]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(hints) == 1 and "replica or a backup" in hints[0]


def test_verify_a_torn_tail_explains_the_next_open_cuts_it(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(sorted(log.glob("*.seg"))[-1], "ab") as f:
        f.write(b"\x00" * 20)
    assert main(["log", "verify", str(log)]) == 1
    out = capsys.readouterr().out
    assert "torn-tail: 00000000000000000008.seg" in out and "LSN 13 onward" in out
    assert "cuts it back to the last whole frame" in out


def test_verify_reports_a_damaged_checkpoint(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = next((log / "checkpoints").glob("*.ckpt"))
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0x01
    ckpt.write_bytes(bytes(data))
    assert main(["log", "verify", str(log)]) == 1
    out = capsys.readouterr().out
    assert "  checkpoint at LSN 7: " in out
    assert "hint: a damaged checkpoint is skipped" in out


# -- trim -------------------------------------------------------------------------------------------


def test_trim_below_an_lsn_removes_whole_segments_and_says_which(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "trim", str(log), "--below", "5"]) == 0
    assert capsys.readouterr().out.startswith("nothing to trim below LSN 5: ")
    assert main(["log", "trim", str(log), "--below", "9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"trimmed {log}: removed 1 segment and 0 checkpoints (")
    assert out[0].endswith("the log now starts at LSN 8")
    assert out[1:] == [f"  removed {FIRST_SEG}"]
    assert not (log / FIRST_SEG).exists()
    assert main(["log", "info", str(log), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["first_lsn"], info["last_lsn"]) == (8, 12)


def test_trim_keeping_the_newest_checkpoints(
    sliced: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "trim", str(sliced), "--keep-checkpoints", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("the log now starts at LSN 8")
    assert out[1:] == [
        "  removed 00000000000000000001.seg",
        "  removed 00000000000000000004.seg",
        "  removed checkpoints/00000000000000000003.ckpt",
    ]
    with LogReader(sliced) as reader:
        assert [c.lsn for c in reader.checkpoints()] == [7, 12]
        assert reader.first_lsn == 8
    assert main(["log", "trim", str(sliced), "--keep-checkpoints", "3"]) == 0
    assert "fewer than the 3 to keep" in capsys.readouterr().out


def test_trim_counts_only_sound_checkpoints(
    sliced: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = sliced / "checkpoints" / "00000000000000000012.ckpt"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0x01
    newest.write_bytes(bytes(data))
    # The newest sound checkpoint is 7, so segment 8 (LSNs 8..12) must stay.
    assert main(["log", "trim", str(sliced), "--keep-checkpoints", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("the log now starts at LSN 8")
    # Trimming past 7 would rely on the damaged checkpoint: refused.
    assert main(["log", "trim", str(sliced), "--below", "13"]) == 2
    err = capsys.readouterr().err
    assert "no sound checkpoint" in err and "LSN 12 or later" in err
    assert (sliced / "00000000000000000008.seg").exists()


def test_trim_without_a_checkpoint_to_recover_from_is_refused(log: Path) -> None:
    for ckpt in (log / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()
    result = _cli("log", "trim", str(log), "--below", "12")
    assert result.returncode == 2
    assert "no sound checkpoint to recover from" in _one_error_line(result)
    assert "--force" in result.stderr
    assert (log / FIRST_SEG).exists()
    forced = _cli("log", "trim", str(log), "--below", "12", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"removed {FIRST_SEG}" in forced.stdout


def test_trim_while_the_instance_runs_says_stop_it_first(log: Path) -> None:
    with LogWriter.open(log, sync=False):
        result = _cli("log", "trim", str(log), "--below", "9")
    assert result.returncode == 2
    line = _one_error_line(result)
    assert "instance 'server' is running" in line and "stop the instance first" in line
    assert (log / FIRST_SEG).exists()


def test_logformat_trim_refuses_to_rely_on_a_damaged_checkpoint(log: Path) -> None:
    """``trim_log`` counts only checkpoints that load, not every file named like one.

    With its only covering checkpoint damaged, dropping segment 1 would leave a log that starts
    at LSN 8 with no checkpoint to recover from.
    """
    ckpt = log / "checkpoints" / "00000000000000000007.ckpt"
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0x01
    ckpt.write_bytes(bytes(data))
    with pytest.raises(TrimRefusedError, match="no sound checkpoint"):
        trim_log(log, 9)
    assert (log / FIRST_SEG).exists()


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["log", "info", "/no/such/place"], "no log directory /no/such/place"),
        (["log", "info", "ghost"], "no instance named 'ghost' under"),
        (["log", "info", "home"], "home is not an immortals log (no meta.json), and no instance"),
        (["log", "info", "{tmp}"], "is not an immortals log (no meta.json)"),
        (["log", "verify", "{log}/meta.json"], "is a file, not a log directory"),
        (["log", "dump", "{log}", "--from", "x"], "an LSN is a whole number, not 'x'"),
        (["log", "dump", "{log}", "--to", "1.5"], "an LSN is a whole number, not '1.5'"),
        (["log", "dump", "{log}", "--from", "0"], "LSNs start at 1, got 0"),
        (["log", "dump", "{log}", "--from", "9", "--to", "3"], "--from 9 is after --to 3"),
        (["log", "trim", "{log}"], "one of the arguments --below --keep-checkpoints is required"),
        (["log", "trim", "{log}", "--keep-checkpoints", "0"], "keep at least 1 checkpoint"),
        (["log", "frobnicate", "{log}"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(
    log: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = _cli(*(a.format(log=log, tmp=tmp_path) for a in args), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert fragment in _one_error_line(result)
    assert result.stdout == ""


def test_main_returns_the_status_instead_of_raising(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "dump"]) == 2
    assert "the following arguments are required: PATH" in capsys.readouterr().err
    assert main(["log", "--help"]) == 0
    assert "info" in capsys.readouterr().out
