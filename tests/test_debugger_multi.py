"""The debugger over several instances (``immortals debug NAME NAME...``): the merged
timeline, the consistent cut in the state pane, following messages, filters, watches and
breakpoints across instances, the command's errors, and SVG snapshots of the merged screens.

The logs are a chain written in-process (tests/chainlogs.py: front calls middle, which posts
to and calls back), with fixed wall times, so every run draws the same screen.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from debugger._causal import StepRef
from debugger._merged_app import MergedDebuggerApp
from tests.chainlogs import write_chain
from tests.test_debugger import SIZE, keys, settle, type_in
from tests.test_debugger_snapshots import script

ORDER = ["front", "middle", "back"]


@pytest.fixture
def chain(tmp_path: Path) -> list[Path]:
    """Five rounds of the chain, and a sixth call to the middle that it never receives."""
    dirs = write_chain(tmp_path / "logs", 5, lost=True)
    return [dirs[name] for name in ORDER]


def where(app: MergedDebuggerApp) -> StepRef:
    assert app.merged is not None
    return app.merged.step(app.timeline.cursor)


async def go(pilot: Pilot[None], target: str) -> None:
    await pilot.press("colon")
    await pilot.pause()
    await type_in(pilot, target)


async def test_the_merged_timeline_is_in_causal_order(chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        merged = app.merged
        assert merged is not None and merged.merge.done
        assert merged.count == sum(h.count for h in merged.histories) == 34
        steps = [merged.step(p) for p in range(1, merged.count + 1)]
        # the first round: front's call, middle's, back's post and call, then the replies
        assert steps[3:9] == [
            StepRef("front", 2),
            StepRef("middle", 2),
            StepRef("back", 2),
            StepRef("back", 3),
            StepRef("middle", 3),
            StepRef("front", 3),
        ]
        await keys(pilot, "j", "j")
        assert where(app) == StepRef("back", 1)


async def test_the_state_pane_shows_every_instance_at_the_cut(chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await go(pilot, "middle:5")  # the middle got back's reply to add(2)
        assert where(app) == StepRef("middle", 5)
        cut = {c.instance: (c.lsn, c.state) for c in app.cut}
        # front's go(2) call (its step 4) happened before; its reply (step 5) did not
        assert cut["front"] == (4, {"count": 1, "last": 10})
        assert cut["middle"] == (5, {"count": 2})
        assert cut["back"] == (5, {"count": 2, "total": 3, "notes": 2})
        await go(pilot, "back:1")  # back's start: nothing of the others happened before
        assert {c.instance: c.lsn for c in app.cut} == {"front": 0, "middle": 0, "back": 1}
        assert [c.state for c in app.cut][:2] == [None, None]


async def test_diffing_each_instance_against_a_marked_cut(chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await go(pilot, "front:3")
        await keys(pilot, "m")
        await go(pilot, "front:7")
        await keys(pilot, "d")
        changes = {c.instance: {(ch.path, ch.old, ch.new) for ch in c.changes} for c in app.cut}
        assert changes["front"] == {(("count",), 1, 3), (("last",), 10, 60)}
        assert (("total",), 1, 6) in changes["back"]


async def test_following_messages_forward_back_between_call_and_reply_and_why(
    chain: list[Path],
) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await go(pilot, "middle:2")  # work(1): it posts note(1), then calls add(1)
        await keys(pilot, "greater_than_sign")
        assert where(app) == StepRef("back", 2)  # the post's receiving step
        await keys(pilot, "less_than_sign")
        assert where(app) == StepRef("middle", 2)  # back to the sender
        await keys(pilot, "greater_than_sign")
        assert where(app) == StepRef("back", 3)  # pressed again: its second message, add(1)
        await keys(pilot, "greater_than_sign")
        assert where(app) == StepRef("middle", 3)  # back's reply, received by the middle
        await keys(pilot, "percent_sign")
        assert where(app) == StepRef("middle", 2)  # the reply's call
        await keys(pilot, "percent_sign")
        assert where(app) == StepRef("middle", 3)  # and back to its reply
        # why, hop by hop: the reply was sent by back's add(1), which the middle's work(1)
        # called, which front's go(1) called, which an outside caller started
        hops = []
        for _ in range(4):
            await keys(pilot, "y")
            hops.append(where(app))
        assert hops == [
            StepRef("back", 3),
            StepRef("middle", 2),
            StepRef("front", 2),
            StepRef("front", 2),  # an outside call: the chain starts here
        ]


async def test_a_message_never_received_is_shown_in_flight(chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "G")
        assert where(app) == StepRef("front", 12)
        assert app.merged is not None and app.merged.marker(app.timeline.cursor) == "~"
        await keys(pilot, "greater_than_sign")
        assert where(app) == StepRef("front", 12)  # nowhere to go
        messages = [n.message for n in app._notifications]
        assert any("in flight" in m and "middle" in m for m in messages), messages


async def test_hiding_an_instance_filters_its_rows(chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "2", "3")  # hide the middle and the back
        assert app.merged is not None
        shown = {app.merged.step(p).instance for p in app.timeline.only or []}
        assert shown == {"front"} and app.timeline.row_count == 12
        await keys(pilot, "1")  # the last instance shown stays
        assert app.timeline.row_count == 12
        await keys(pilot, "2", "3")
        assert app.timeline.only is None and app.timeline.row_count == 34


async def test_watches_name_an_instance_and_where_it_changed(chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await type_in(pilot, "back.total")
        merged = app.merged
        assert merged is not None
        values = app.timeline.watch_values
        # the back's total after its newest step at or before each row
        assert values[merged.merge.position(StepRef("front", 3))] == ["1"]  # type: ignore[index]
        assert values[merged.merge.position(StepRef("back", 2))] == ["0"]  # type: ignore[index]
        assert values[1] == ["-"]  # before the back's first step
        await go(pilot, "front:9")
        await keys(pilot, "W")  # the back step that last changed back.total before here
        assert where(app) == StepRef("back", 9)


async def test_breakpoints_continue_across_instances(chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await type_in(pilot, "method add")
        await pilot.press("b")
        await type_in(pilot, "method go")
        hits = []
        for _ in range(3):
            await keys(pilot, "c")
            hits.append(where(app))
        assert hits == [StepRef("front", 2), StepRef("back", 3), StepRef("front", 4)]
        await keys(pilot, "C")
        assert where(app) == StepRef("back", 3)


def _args(home: Path, *paths: str, all: bool = False, app: str | None = None) -> Any:
    return argparse.Namespace(paths=list(paths), all=all, app=app, home=home, no_index=True)


def test_the_command_finds_names_and_all(tmp_path: Path) -> None:
    from debugger.cli import _log_dirs

    home = tmp_path / "home"
    write_chain(home / "logs", 1)
    assert [p.name for p in _log_dirs(_args(home, all=True))] == ["back", "front", "middle"]
    assert [p.name for p in _log_dirs(_args(home, "front", "back"))] == ["front", "back"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["debug", "front", "nobody"], "nobody"),
        (["debug", "front", "front"], "front is given twice"),
        (["debug", "front", "--all"], "not both"),
        (["debug", "front", "back", "--app", "x.py:Y"], "--app applies to one log"),
        (["debug"], "give a log directory or an instance name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    from runtime.cli import main

    home = tmp_path / "home"
    write_chain(home / "logs", 1)
    assert main(["--home", str(home), *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_all_over_a_home_without_instances_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    assert main(["--home", str(tmp_path / "empty"), "debug", "--all"]) == 2
    err = capsys.readouterr().err
    assert "--all: no instance has a log under" in err and len(err.strip().splitlines()) == 1


# -- snapshots -------------------------------------------------------------------------------


def test_snapshot_merged_first_screen(snap_compare: Any, chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=script())


def test_snapshot_consistent_cut(snap_compare: Any, chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    run = script(("colon", "middle:5"))
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_snapshot_cut_diff_and_a_watch(snap_compare: Any, chain: list[Path]) -> None:
    app = MergedDebuggerApp(chain, index=False)
    run = script(("w", "back.total"), ("colon", "front:3"), "m", ("colon", "front:7"), "d")
    assert snap_compare(app, terminal_size=SIZE, run_before=run)
