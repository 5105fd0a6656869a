"""The debugger's behaviour, driven headless with Textual's Pilot over checked-in logs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.pilot import Pilot

from debugger import DebuggerApp
from tests.replaylog import Recorder

FIXTURES = Path(__file__).parent / "fixtures"
COUNTER = FIXTURES / "debugger" / "counter"  # 241 steps, checkpoints after 101 and 201
ACCOUNTS = FIXTURES / "replay" / "v1" / "log"  # 12 steps: awaits, a timer, exceptions
SIZE = (120, 36)


@pytest.fixture
def counter_log(tmp_path: Path) -> Path:
    log = tmp_path / "counter"
    shutil.copytree(COUNTER, log)  # opening builds an index and spills snapshots: keep a copy
    return log


@pytest.fixture
def accounts_log(tmp_path: Path) -> Path:
    log = tmp_path / "accounts"
    shutil.copytree(ACCOUNTS, log)
    return log


async def settle(pilot: Pilot[None]) -> None:
    """Let every worker finish and the screen catch up."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def keys(pilot: Pilot[None], *presses: str) -> None:
    for key in presses:
        await pilot.press(key)
        await settle(pilot)


async def type_in(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")
    await settle(pilot)


async def test_moving_through_history(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.timeline.cursor == 1
        await keys(pilot, "j", "j")
        assert app.timeline.cursor == 3
        assert app.view is not None and app.view.state == {"count": 2}
        await keys(pilot, "right_square_bracket", "right_curly_bracket")
        assert app.timeline.cursor == 113
        await keys(pilot, "left_square_bracket", "k")
        assert app.timeline.cursor == 102
        await keys(pilot, "G")
        assert app.timeline.cursor == 241 and app.view.state == {"count": 240}
        await keys(pilot, "left_curly_bracket", "left_curly_bracket", "left_curly_bracket")
        assert app.timeline.cursor == 1  # clamped at the first step
        await keys(pilot, "colon")
        await type_in(pilot, "150")
        assert app.timeline.cursor == 150 and app.view.state == {"count": 149}
        await keys(pilot, "colon")
        await type_in(pilot, "10:00:00.200")  # wall time: step n ran at 10:00:00 + n ms
        assert app.timeline.cursor == 200
        await keys(pilot, "g")
        assert app.timeline.cursor == 1


async def test_the_panes_show_the_selected_step(accounts_log: Path) -> None:
    app = DebuggerApp(accounts_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "colon")
        await type_in(pilot, "6")  # withdraw(500): refused with an exception
        view = app.view
        assert view is not None and view.step.lsn == 6
        assert view.handler is not None and view.handler.function == "withdraw"
        assert view.step.effects["replies"][0][1] is False
        assert view.step.state_diff == []
        await keys(pilot, "colon")
        await type_in(pilot, "4")  # transfer to bob: a call goes out, the handler awaits
        assert app.view is not None
        assert app.view.step.effects["calls"] == [["bob", 1, "deposit", [15], True]]
        assert [c.path for c in app.view.step.state_diff] == [("balance",)]


async def test_stepping_through_a_handler_line_by_line(accounts_log: Path) -> None:
    app = DebuggerApp(accounts_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "colon")
        await type_in(pilot, "2")  # deposit(40)
        await keys(pilot, "s")
        assert app.line_index == 0
        first = app.source_view.current_line
        await keys(pilot, "j", "j")
        assert app.line_index == 2 and app.source_view.current_line == first + 2
        assert app.timeline.cursor == 2  # j moved lines, not steps
        await keys(pilot, "k")
        assert app.line_index == 1
        await keys(pilot, "escape")
        assert app.line_index is None
        await keys(pilot, "j")
        assert app.timeline.cursor == 3


async def test_breakpoints_continue_and_reverse_continue(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "b")
        await type_in(pilot, 'state["count"] % 50 == 0 and state["count"] > 0')
        await keys(pilot, "c")
        assert app.timeline.cursor == 51
        await keys(pilot, "c", "c")
        assert app.timeline.cursor == 151  # across the checkpoint after step 101
        await keys(pilot, "C")
        assert app.timeline.cursor == 101
        assert {51, 101, 151} <= app.timeline.hits
        await keys(pilot, "x", "b")
        await type_in(pilot, "method inc")
        await keys(pilot, "c")
        assert app.timeline.cursor == 102


async def test_watch_and_where_did_it_change(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "w")
        await type_in(pilot, 'state["count"] // 30')
        assert app.timeline.watch_columns == ['state["count"] // 30']
        assert app.timeline.watch_values[5] == ["0"]
        await keys(pilot, "colon")
        await type_in(pilot, "100")
        await keys(pilot, "W")
        assert app.timeline.cursor == 91  # count 90 after step 91: 90 // 30 became 3


async def test_mark_and_diff_against_it(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "colon")
        await type_in(pilot, "10")
        await keys(pilot, "m", "right_square_bracket", "d")
        assert app.timeline.mark == 10 and app.diff_mode
        assert app.view is not None and app.view.diff_against_mark is not None
        change = app.view.diff_against_mark[0]
        assert (change.path, change.old, change.new) == (("count",), 9, 19)
        assert "changes from step 10 to step 20" in str(app.state_view.border_title)


async def test_search_by_method_and_text(accounts_log: Path) -> None:
    app = DebuggerApp(accounts_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "slash")
        await type_in(pilot, "transfer")
        assert app.timeline.cursor == 4
        await keys(pilot, "n")
        assert app.timeline.cursor == 9
        await keys(pilot, "N")
        assert app.timeline.cursor == 4


async def test_following_a_live_log(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "live", "samples/counter/counter.py:Server")
    for _ in range(5):
        rec.call("inc")
    app = DebuggerApp(tmp_path / "live")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await keys(pilot, "f")
            assert app.following and app.timeline.cursor == 6
            for _ in range(7):
                rec.call("inc")
            await pilot.pause(1.2)  # the log is polled twice a second
            await settle(pilot)
            assert app.timeline.cursor == 13
            assert app.view is not None and app.view.state == {"count": 12}
    finally:
        rec.close()


async def test_help_and_command_palette(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await keys(pilot, "escape")
        names = [name for name, _action, _help in app.palette_actions()]
        assert "Reverse-continue" in names and "Where did the watch change?" in names
        await app.run_action("last")
        await settle(pilot)
        assert app.timeline.cursor == 241


async def test_a_damaged_log_opens_with_a_message(counter_log: Path) -> None:
    seg = next(counter_log.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damage mid-log: the steps before it stay readable
    seg.write_bytes(bytes(data))
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.history is not None and 1 < app.history.last_lsn < 241
        messages = [n.message for n in app._notifications]
        assert any("damage" in m or "checksum" in m or "corrupt" in m.lower() for m in messages)
        await keys(pilot, "G")
        assert app.timeline.cursor == app.history.last_lsn


async def test_an_app_that_cannot_be_imported_leaves_the_timeline(counter_log: Path) -> None:
    app = DebuggerApp(counter_log, app="no/such/file.py:Server")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.history is not None and app.history.app_error
        await keys(pilot, "j", "j")
        assert app.timeline.cursor == 3  # moving still works; the panes say why they are empty
        assert app.view is None


async def test_not_a_log_is_an_error_screen(tmp_path: Path) -> None:
    app = DebuggerApp(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert type(app.screen).__name__ == "ErrorScreen"
        await pilot.press("q")


async def test_a_small_terminal_gets_a_notice(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=(60, 15)) as pilot:
        await settle(pilot)
        assert app.query_one("#too-small").display
        assert not app.query_one("#main").display


async def test_filter_shows_only_matching_steps(accounts_log: Path) -> None:
    app = DebuggerApp(accounts_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "F")
        await type_in(pilot, "transfer")
        assert app.timeline.only == [4, 9]
        assert app.timeline.cursor == 4
        await keys(pilot, "j")
        assert app.timeline.cursor == 9  # the next matching step, not step 5
        await keys(pilot, "j", "g")
        assert app.timeline.cursor == 4
        await keys(pilot, "colon")
        await type_in(pilot, "6")  # a step the filter hides: the filter goes
        assert app.timeline.only is None and app.timeline.cursor == 6
        await keys(pilot, "F")
        await type_in(pilot, "bob")
        assert app.timeline.only == [4, 7]  # the call to bob and bob's reply
        await keys(pilot, "F")
        await pilot.press("enter")  # empty: every step again
        await settle(pilot)
        assert app.timeline.only is None


async def test_the_mouse_selects_a_row(counter_log: Path) -> None:
    app = DebuggerApp(counter_log)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # Row y of the widget: 0 is its border, 1 the header, so y = 4 is the third step.
        await pilot.click("#timeline", offset=(20, 4))
        await settle(pilot)
        assert app.timeline.cursor == 3
        assert app.view is not None and app.view.step.lsn == 3


def test_the_debug_command_is_wired(capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli import main

    assert main(["debug", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--app" in out and "PATH" in out
    assert main(["debug"]) == 2  # PATH is required: a one-line usage error
