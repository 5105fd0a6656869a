"""Logpoints in the debugger: a print added to the past, as a timeline column and in the step's
pane, computed in the background over the whole history (Pilot, headless)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from debugger import DebuggerApp
from tests.test_debugger import COUNTER, SIZE, keys, settle, type_in
from tests.test_debugger_snapshots import script

SPEC = "counter.py:17 self.count * 2"  # the line `return self.count`, after the increment


@pytest.fixture
def counter_log(tmp_path: Path) -> Path:
    log = tmp_path / "counter"
    shutil.copytree(COUNTER, log)
    return log


async def test_a_logpoint_fills_a_column_and_the_steps_pane(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "l")
        await type_in(pilot, SPEC)
        await app.logpoints_done()
        await settle(pilot)
        assert app.timeline.logpoint_columns == [SPEC]
        # Step n (n >= 2) is the (n - 1)-th inc: the count is n - 1 when line 17 runs.
        assert [app.timeline.logpoint_cell(lsn, 0) for lsn in (1, 2, 5, 241)] == [
            "",
            "2",
            "8",
            "480",
        ]
        await keys(pilot, "colon")
        await type_in(pilot, "5")
        assert app.effects_view.logpoint_lines == (f"{SPEC}  ->  8",)
        await keys(pilot, "L")
        assert app.timeline.logpoint_columns == []
        assert app.effects_view.logpoint_lines == ()


async def test_a_bad_logpoint_is_one_notice_and_adds_no_column(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for spec, said in (
            ("counter.py:17 self.count +", "not valid Python"),
            ("nowhere.py:3 x", "is not a file of the app"),
            ("counter.py", "FILE:LINE:EXPR"),
        ):
            await keys(pilot, "l")
            await type_in(pilot, spec)
            await app.logpoints_done()
            await settle(pilot)
            assert app.timeline.logpoint_columns == []
            assert app.logpoint_error is not None and said in app.logpoint_error, spec


def test_snapshot_of_a_logpoint_column_and_its_pane(snap_compare: Any, counter_log: Path) -> None:
    assert snap_compare(
        DebuggerApp(counter_log),
        terminal_size=SIZE,
        run_before=script(("l", SPEC), ("colon", "5")),
    )


async def test_the_merged_view_points_to_one_log_for_logpoints(tmp_path: Path) -> None:
    from debugger._dialogs import Prompt
    from debugger._merged_app import MergedDebuggerApp
    from tests.chainlogs import write_chain

    dirs = write_chain(tmp_path / "logs", 2)
    app = MergedDebuggerApp([dirs[name] for name in ("front", "middle", "back")])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "l")
        assert not isinstance(app.screen, Prompt)  # a notice pointing to one log, no prompt
        assert app.is_running
