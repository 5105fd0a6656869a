"""Every debugger screen, as SVG snapshots (pytest-textual-snapshot) over checked-in logs.

A change in how a screen looks fails here; if the change is wanted, review the new SVGs and
accept them with ``pytest tests/test_debugger_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from debugger import DebuggerApp
from tests.test_debugger import ACCOUNTS, COUNTER, SIZE, settle

Script = Callable[[Pilot[None]], Awaitable[None]]


@pytest.fixture
def counter_log(tmp_path: Path) -> Path:
    log = tmp_path / "counter"
    shutil.copytree(COUNTER, log)
    return log


@pytest.fixture
def accounts_log(tmp_path: Path) -> Path:
    log = tmp_path / "accounts"
    shutil.copytree(ACCOUNTS, log)
    return log


def script(*steps: str | tuple[str, str]) -> Script:
    """Keys to press (a tuple types text into a prompt), settling after each, toasts cleared."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for step in steps:
            if isinstance(step, tuple):
                await pilot.press(step[0])
                await pilot.pause()
                await pilot.press(*step[1])
                await pilot.press("enter")
            else:
                await pilot.press(step)
            await settle(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()

    return run


def test_first_screen(snap_compare: Any, counter_log: Path) -> None:
    assert snap_compare(DebuggerApp(counter_log), terminal_size=SIZE, run_before=script())


def test_an_awaiting_handler_and_its_effects(snap_compare: Any, accounts_log: Path) -> None:
    run = script(("colon", "4"))
    assert snap_compare(DebuggerApp(accounts_log), terminal_size=SIZE, run_before=run)


def test_stepping_into_lines_shows_locals(snap_compare: Any, accounts_log: Path) -> None:
    run = script(("colon", "9"), "s", "j")
    assert snap_compare(DebuggerApp(accounts_log), terminal_size=SIZE, run_before=run)


def test_diff_against_a_marked_step(snap_compare: Any, accounts_log: Path) -> None:
    run = script(("colon", "2"), "m", ("colon", "11"), "d")
    assert snap_compare(DebuggerApp(accounts_log), terminal_size=SIZE, run_before=run)


def test_watch_column_and_breakpoint_hits(snap_compare: Any, counter_log: Path) -> None:
    run = script(
        ("w", 'state["count"] * 10'),
        ("b", 'state["count"] in (3, 7)'),
        "c",
        "c",
    )
    assert snap_compare(DebuggerApp(counter_log), terminal_size=SIZE, run_before=run)


def test_checkpoint_marks_and_status(snap_compare: Any, counter_log: Path) -> None:
    run = script(("colon", "110"))
    assert snap_compare(DebuggerApp(counter_log), terminal_size=SIZE, run_before=run)


def test_help_screen(snap_compare: Any, counter_log: Path) -> None:
    run = script("question_mark")
    assert snap_compare(DebuggerApp(counter_log), terminal_size=SIZE, run_before=run)


def test_terminal_too_small(snap_compare: Any, counter_log: Path) -> None:
    assert snap_compare(DebuggerApp(counter_log), terminal_size=(60, 15), run_before=script())


def test_not_a_log(snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)  # a relative path: the message is the same on every run
    app = DebuggerApp("empty")
    assert snap_compare(app, terminal_size=SIZE, run_before=script())


def test_an_app_that_cannot_be_imported(snap_compare: Any, counter_log: Path) -> None:
    app = DebuggerApp(counter_log, app="missing/app.py:Server")
    assert snap_compare(app, terminal_size=SIZE, run_before=script("j"))


def test_filtered_timeline(snap_compare: Any, accounts_log: Path) -> None:
    run = script(("F", "transfer"))
    assert snap_compare(DebuggerApp(accounts_log), terminal_size=SIZE, run_before=run)


def test_go_to_prompt(snap_compare: Any, counter_log: Path) -> None:
    async def run(pilot: Pilot[None]) -> None:
        await script()(pilot)
        await pilot.press("colon")
        await pilot.pause()
        from textual.widgets import Input

        field = pilot.app.screen.query_one(Input)
        field.cursor_blink = False  # a blinking cursor would make the picture flaky
        await pilot.press(*"10:00:00.120")
        await pilot.pause()

    assert snap_compare(DebuggerApp(counter_log), terminal_size=SIZE, run_before=run)


def test_search_lands_on_a_match(snap_compare: Any, accounts_log: Path) -> None:
    run = script(("slash", "carol"))
    assert snap_compare(DebuggerApp(accounts_log), terminal_size=SIZE, run_before=run)
