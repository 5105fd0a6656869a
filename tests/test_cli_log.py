"""`immortals log info|dump|verify|trim`: what they print, and one clear line on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from logformat import LogWriter
from runtime.cli import main
from tests.logutil import record, write_log

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "logs" / "server"
    write_log(path, [3, 4, 5], segment_size=300)
    with LogWriter.open(path, sync=False) as writer:
        writer.write_checkpoint(7, {"count": 7})
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_info_by_path_and_by_instance_name(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "info", str(log)]) == 0
    text = capsys.readouterr().out
    assert "server" in text
    assert "1..12 (12 records)" in text
    assert "LSN 7" in text
    home = log.parent.parent
    assert main(["--home", str(home), "log", "info", "server", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["first_lsn"], info["last_lsn"], info["frames"]) == (1, 12, 3)
    assert len(info["segments"]) >= 2
    assert info["checkpoints"][0]["lsn"] == 7
    assert info["raw_bytes"] >= info["stored_bytes"] > 0


def test_dump_text_and_json_ranges(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "dump", str(log), "--from", "4", "--to", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [4, 5, 6]
    assert "'seq': 5" in lines[1]
    assert "\x1b[" not in lines[0]  # no colour when not on a terminal
    assert main(["log", "dump", str(log), "--json", "--from", "11"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["lsn"] for r in rows] == [11, 12]
    assert rows[0]["value"] == json.loads(json.dumps(record(11)))
    assert rows[0]["time"].endswith("+00:00")


def test_verify_whole_and_damaged(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "verify", str(log)]) == 0
    assert "whole" in capsys.readouterr().out
    first = sorted(log.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[-3] ^= 0x40  # inside the body of the first segment's last frame
    first.write_bytes(bytes(data))
    assert main(["log", "verify", str(log)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out
    assert "LSN" in out and first.name in out
    assert "what to do" in out


def test_trim_by_retention(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "trim", str(log), "--keep-checkpoints", "1"]) == 0
    out = capsys.readouterr().out
    assert "trimmed" in out or "nothing to trim" in out
    assert main(["log", "info", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_lsn"] == 12


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["log", "info", "/no/such/place"], "no log at"),
        (["log", "dump", "{log}", "--from", "x"], "whole number"),
        (["log", "dump", "{log}", "--from", "0"], "start at 1"),
        (["log", "dump", "{log}", "--from", "9", "--to", "3"], "after --to"),
        (["log", "info", "{tmp}"], "no meta.json"),
        (["log", "frobnicate", "{log}"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(
    log: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = _cli(*(a.format(log=log, tmp=tmp_path) for a in args))
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_trim_without_a_checkpoint_to_recover_from_is_refused(log: Path) -> None:
    for ckpt in (log / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()
    result = _cli("log", "trim", str(log), "--below", "12")
    assert result.returncode == 2
    assert "no checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_trim_while_the_instance_runs_says_stop_it_first(log: Path) -> None:
    with LogWriter.open(log, sync=False):
        result = _cli("log", "trim", str(log), "--below", "5", "--force")
    assert result.returncode == 2
    assert "stop it first" in result.stderr


def test_dump_into_a_closed_pipe_is_quiet(log: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        f"{sys.executable} -m runtime log dump {log} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr
