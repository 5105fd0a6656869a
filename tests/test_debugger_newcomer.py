"""What a newcomer met in the debugger (issue 13): each test drives the real app with Pilot, or
the real command in a subprocess, the way the README's tour does."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import Static

from debugger import DebuggerApp
from debugger._status import StatusLine
from tests._instances import REPO
from tests.replaylog import Recorder
from tests.test_debugger import SIZE, keys, settle

COUNTER = "samples/counter/counter.py:Server"


def text_of(widget: Static) -> str:
    """What a pane shows, as plain text."""
    console = Console(width=200, file=io.StringIO())
    console.print(widget.content)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def record(log: Path, app: str, calls: list[tuple[str, Any]], *, wall_start_ns: int = 0) -> Path:
    rec = Recorder(log, app, wall_start_ns=wall_start_ns)
    for method, *args in calls:
        rec.call(method, *args)
    rec.close()
    return log


def test_an_unknown_log_is_one_error_line(tmp_path: Path) -> None:
    record(tmp_path / "home" / "logs" / "server", COUNTER, [("inc",)])
    try:
        done = subprocess.run(
            [sys.executable, "-m", "runtime", "--home", str(tmp_path / "home"), "debug", "sever"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("immortals debug waited for a key instead of failing")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("immortals: error: ")
    assert "no instance named 'sever'" in lines[0]
    assert "hint: instances under" in lines[0] and "server" in lines[0]
    assert done.stdout == ""


async def test_the_readme_damage_opens_up_to_it(tmp_path: Path) -> None:
    # As the README's tour: a log its writer indexed, then one byte flipped at offset 300.
    log = record(tmp_path / "server", COUNTER, [("inc",)] * 6)
    seg = sorted(log.glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[300] ^= 0xFF
    seg.write_bytes(bytes(data))
    app = DebuggerApp(log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        history = app.history
        assert history is not None and 1 <= history.last_lsn < 7
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert len(errors) == 1 and f"damaged at LSN {history.last_lsn + 1}" in errors[0]
        assert f"steps 1..{history.last_lsn} are shown" in errors[0]
        await keys(pilot, "G")
        assert app.timeline.cursor == history.last_lsn
        assert app.view is not None and app.view.step.lsn == history.last_lsn


async def test_the_status_line_knows_the_time_after_a_jump(tmp_path: Path) -> None:
    log = record(tmp_path / "log", COUNTER, [("inc",)] * 600, wall_start_ns=1_764_000_000 * 10**9)
    app = DebuggerApp(log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "right_curly_bracket", "right_curly_bracket", "right_curly_bracket")
        assert app.timeline.cursor == 301  # a block of rows not read before the jump
        status = text_of(app.query_one(StatusLine))
        assert "time unknown" not in status and "2025-11-24 16:00:00.301 UTC" in status
        await keys(pilot, "G")
        assert "16:00:00.601 UTC" in text_of(app.query_one(StatusLine))


LONG_APP = """
from runtime import Immortal, rpc


class Long(Immortal):
    def __init__(self) -> None:
        self.total = 0

    @rpc
    def add(self, n: int) -> int:
{body}
        self.total += v24
        return self.total
"""


async def test_the_source_pane_follows_the_current_line(tmp_path: Path) -> None:
    body = "\n".join(f"        v{i} = {'n' if i == 0 else f'v{i - 1}'} + 1" for i in range(25))
    (tmp_path / "long.py").write_text(LONG_APP.format(body=body))
    log = record(tmp_path / "log", f"{tmp_path / 'long.py'}:Long", [("add", 1)])
    app = DebuggerApp(log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "j", "s")
        source = app.source_view
        assert source.handler is not None
        height = source.scrollable_content_region.height
        for _ in range(26):
            await keys(pilot, "j")
            assert source.current_line is not None
            row = source.current_line - source.handler.first_line
            assert source.scroll_y <= row < source.scroll_y + height
        assert source.scroll_y > 0  # the handler is longer than the pane: it scrolled


async def test_recorded_uuids_and_clock_values_read_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        log = record(tmp_path / "log", "tests/apps/ledger.py:Dice", [("roll",), ("later", 2.0)])
        app = DebuggerApp(log)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await keys(pilot, "j")  # roll(): the clock and a uuid
            used = [line.split() for line in text_of(app.effects_view).splitlines()]
            used = [words[1:] for words in used if words[:1] == ["used"]]
            assert used == [
                ["now", "2023-11-14", "22:13:20.000", "+0000"],
                ["uuid", "00000000-0000-0000-0000-000000000001"],
            ]
            await keys(pilot, "j")  # later(2.0): a durable timer, due at a clock time
            shown = text_of(app.effects_view)
            assert "due at 2023-11-14 22:13:22.250 +0000" in shown
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


async def test_the_help_explains_the_timeline_markers(tmp_path: Path) -> None:
    log = record(tmp_path / "log", COUNTER, [("inc",)])
    app = DebuggerApp(log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "question_mark")
        shown = text_of(app.screen.query_one(Static))
        assert "● in the timeline" in shown and "breakpoint hit" in shown
        assert "C in the timeline" in shown and "checkpoint" in shown
