"""Logpoints (issue 18, "prints added to the past"): an expression at a line of the app,
evaluated at every time that line ran in a recorded history, as if a print had been there.

The reference is a real print: a copy of the app with the print inserted runs live with the
same calls, and its printed lines must be exactly the logpoint's values, step by step.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from replayer import Replayer
from replayer._logpoint import Hit, HitTable, Logpoint, LogpointError, LogpointRun, by_step
from runtime import connect
from tests._instances import Cluster, Instance, run_cli
from tests.replaylog import Recorder

TALLY = """\
from runtime import Immortal, rpc


class Tally(Immortal):
    def __init__(self) -> None:
        self.items: list[int] = []
        self.total = 0

    @rpc
    def add(self, *values: int) -> int:
        for v in values:
            if v % 2 == 0:
                self.total += v
            self.items.append(v)
        return self.total

    @rpc
    async def twice(self, v: int) -> int:
        first = await self.ref(self.instance_name).add(v)
        doubled = first * 2
        return doubled
"""
LOOP = 12  # `if v % 2 == 0:`: runs once per value
EVEN = 13  # `self.total += v`: only for even values
AFTER_AWAIT = 20  # `doubled = first * 2`: runs in the step that delivers the reply
CALLS: list[tuple[str, tuple[int, ...]]] = [
    ("add", (1, 2, 3)),
    ("add", ()),
    ("twice", (4,)),
    ("add", (6, 7, 8, 10)),
    ("twice", (5,)),
]


def _line(source: str, number: int) -> str:
    return source.splitlines()[number - 1]


def _with_print(source: str, number: int, expression: str) -> str:
    """``source`` with ``print(EXPR)`` inserted before line ``number``, at its indentation."""
    lines = source.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[number - 1]).group()  # type: ignore[union-attr]
    lines.insert(number - 1, f"{indent}print({expression})\n")
    return "".join(lines)


def _run_live(tmp: Path, source: str) -> Instance:
    """Run ``source`` as instance ``tally`` in a home of its own, make CALLS, stop it."""
    app = tmp / "tally.py"
    app.write_text(source)
    cluster = Cluster(tmp / "home")
    instance = cluster.start(f"{app}:Tally", "tally")
    try:
        with connect(tmp / "home", timeout=20) as client:
            for method, args in CALLS:
                client.call("tally", method, *args)
        assert instance.stop() == 0
    finally:
        cluster.stop_all()
    return instance


def _printed(instance: Instance) -> list[tuple[int, str]]:
    """(LSN, text) of every line the handler printed (tagged ``[tally LSN n]`` on stderr)."""
    found = (re.match(r"\[tally LSN (\d+)\] (.*)$", line) for line in instance.stderr)
    return [(int(m.group(1)), m.group(2)) for m in found if m]


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A live history of TALLY (the app file left as it ran): its folder."""
    folder = tmp_path_factory.mktemp("recorded")
    _run_live(folder, TALLY)
    return folder


@pytest.mark.parametrize(
    ("line", "expression"),
    [
        (LOOP, "(v, self.total, len(self.items))"),
        (EVEN, "self.total + v"),
        (AFTER_AWAIT, "[first, self.total]"),
    ],
)
def test_a_logpoint_shows_what_a_print_added_to_the_code_prints_in_a_fresh_run(
    recorded: Path, tmp_path: Path, line: int, expression: str
) -> None:
    printing = _run_live(tmp_path, _with_print(TALLY, line, expression))
    expected = _printed(printing)
    assert expected, printing.stderr[-5:]  # the print did run (else the test proves nothing)
    app, log = recorded / "tally.py", recorded / "home" / "logs" / "tally"
    with LogpointRun(log, [f"tally.py:{line}:{expression}"]) as run:
        hits = list(run.hits())
    assert [(h.lsn, h.text) for h in hits] == expected
    assert all(h.error is None for h in hits)
    assert app.read_text() == TALLY  # the app's file is as it was


def test_hits_are_numbered_within_their_step_and_carry_the_step(recorded: Path) -> None:
    log = recorded / "home" / "logs" / "tally"
    with LogpointRun(log, [f"tally.py:{LOOP} v", f"tally.py:{EVEN} v"]) as run:
        hits = list(run.hits())
    steps = by_step(hits)
    first = steps[2]  # add(1, 2, 3): the loop line three times, the even line once
    assert [(h.logpoint, h.nth, h.value) for h in first] == [
        (0, 0, 1),
        (0, 1, 2),
        (1, 0, 2),
        (0, 2, 3),
    ]
    assert 3 not in steps  # add() of nothing: the loop body never ran
    with Replayer(log) as r:
        walls = {s.lsn: s.wall_ns for s in r.steps(diff=False)}
    assert all(h.wall_ns == walls[h.lsn] for h in hits)


def test_nothing_is_written_to_the_log_and_the_app_file_is_untouched(tmp_path: Path) -> None:
    _run_live(tmp_path, TALLY)  # a log no reader has opened since its instance stopped
    log, app = tmp_path / "home" / "logs" / "tally", tmp_path / "tally.py"
    before, app_before = _files(log), (app.read_bytes(), app.stat().st_mtime_ns)
    with LogpointRun(log, [f"tally.py:{LOOP} self.items", f"tally.py:{EVEN} 1 / 0"]) as run:
        assert len(list(run.hits())) > 5
    after = _files(log)
    assert sorted(after) == sorted(before)  # no file added (no snapshot spilled, no cache)
    changed = [name for name in before if after[name] != before[name]]
    # lmdb rewrites its reader table in lock.mdb on every open, by any reader (`log info`
    # too): not the log's data. The segments, meta.json, the code store and the index's data
    # are byte for byte what they were.
    assert changed in ([], ["index/lock.mdb"])
    assert any(name.endswith(".seg") for name in before) and "index/data.mdb" in before
    assert (app.read_bytes(), app.stat().st_mtime_ns) == app_before


# -- code versions ------------------------------------------------------------------------------

V1 = """\
from runtime import Immortal, rpc


class Counter(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    def inc(self) -> int:
        self.count += 1
        return self.count
"""
V2 = V1.replace(
    "        self.count += 1\n",
    "        self.count += 10\n        self.count -= 5\n",
)  # line 10 now adds 10, and line 11 is new (in V1 it is the return)
INC = 10


def test_a_logpoint_runs_against_the_code_version_that_ran_each_step(tmp_path: Path) -> None:
    home, app = tmp_path / "home", tmp_path / "app.py"
    cluster = Cluster(home)
    counter = cluster.add(f"{app}:Counter", "counter")
    try:
        for source in (V1, V2):
            app.write_text(source)
            counter.start()
            with connect(home, timeout=20) as client:
                for _ in range(2):
                    client.call("counter", "inc")
            assert counter.stop() == 0
    finally:
        cluster.stop_all()
    app.write_text(V1.replace("+= 1", "+= 7"))  # edited again, never run: must not be used
    log = home / "logs" / "counter"
    kinds = [s.input["k"] for s in Replayer(log).steps(diff=False)]
    assert kinds == ["start", "call", "call", "upgrade", "call", "call"]
    specs = [f"app.py:{INC} self.count", "app.py:11 self.count"]
    with LogpointRun(log, specs) as run:
        hits = [(h.logpoint, h.lsn, h.value) for h in run.hits()]
        notes = run.notes
    # Line 10 is `count += 1` in V1 (steps 2, 3) and `count += 10` in V2 (5, 6); line 11 is
    # V1's return and V2's `count -= 5`: both have code, and both run.
    assert hits == [
        (0, 2, 0),
        (1, 2, 1),
        (0, 3, 1),
        (1, 3, 2),
        (0, 5, 2),
        (1, 5, 12),
        (0, 6, 7),
        (1, 6, 17),
    ]
    assert notes == []
    # Line 12 is the return in V2 and past the end of V1: noted once, hits only in V2.
    with LogpointRun(log, ["app.py:12 self.count"]) as run:
        assert [(h.lsn, h.value) for h in run.hits()] == [(5, 7), (6, 12)]
        (note,) = run.notes
    assert "line 12 has no code" in note and "steps 1..3" in note


# -- errors ---------------------------------------------------------------------------------------

COUNTER = "samples/counter/counter.py:Server"  # `self.count += 1` is line 16


@pytest.fixture
def counted(tmp_path: Path) -> Path:
    rec = Recorder(tmp_path / "log", COUNTER)
    for _ in range(6):
        rec.call("inc")
    rec.close()
    return tmp_path / "log"


def test_an_exception_in_the_expression_is_a_value_and_the_replay_goes_on(counted: Path) -> None:
    with LogpointRun(counted, ["counter.py:16 10 // (self.count - 2)", "counter.py:17 x"]) as run:
        hits = list(run.hits())
    divided = [(h.lsn, h.value, h.error) for h in hits if h.logpoint == 0]
    assert divided == [
        (2, -5, None),
        (3, -10, None),
        (4, None, "ZeroDivisionError: integer division or modulo by zero"),
        (5, 10, None),
        (6, 5, None),
        (7, 3, None),
    ]
    names = [h for h in hits if h.logpoint == 1]
    assert len(names) == 6 and all(h.error and h.error.startswith("NameError") for h in names)
    assert names[0].text == f"<error {names[0].error}>"


def test_an_expression_that_changes_the_step_is_reported_not_shown(counted: Path) -> None:
    with (
        LogpointRun(counted, ["counter.py:17 setattr(self, 'count', 0)"]) as run,
        pytest.raises(LogpointError, match="step 2 re-executes differently"),
    ):
        list(run.hits())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("counter.py", "is not FILE:LINE:EXPR"),
        ("counter.py:16:", "needs a file, a line and an expression"),
        ("counter.py:sixteen:self", "is not FILE:LINE:EXPR"),
        ("counter.py:16 self.count +", "not valid Python"),
        ("counter.py:16 (n := 1)", "must only read"),
        ("nope.py:16 1", "'nope.py' is not a file of the app (its files: counter.py)"),
        ("counter.py:13 1", "line 13 has no code"),
        ("counter.py:15 1", "line 15 defines inc"),
        ("counter.py:10 1", "line 10 defines Server"),
        ("counter.py:400 1", "past the end of the file"),
    ],
)
def test_a_logpoint_that_cannot_hit_is_refused_with_what_to_do(
    counted: Path, spec: str, message: str
) -> None:
    with pytest.raises(LogpointError, match=re.escape(message)):
        LogpointRun(counted, [spec])


def test_both_spec_forms_and_any_path_ending_in_the_module(counted: Path) -> None:
    assert Logpoint.parse("counter.py:16:a[1:2]") == Logpoint("counter.py", 16, "a[1:2]")
    assert Logpoint.parse("counter.py:16 {'a': 1}") == Logpoint("counter.py", 16, "{'a': 1}")
    long = str(Path("samples/counter/counter.py").resolve())
    with LogpointRun(counted, [f"{long}:16:self.count"]) as run:
        assert [h.value for h in run.hits()] == [0, 1, 2, 3, 4, 5]


def test_progress_is_reported_and_a_run_can_be_cancelled(counted: Path) -> None:
    seen: list[tuple[int, int]] = []
    with LogpointRun(counted, ["counter.py:16 self.count"], from_lsn=3) as run:
        assert [h.lsn for h in run.hits(progress=lambda d, t: seen.append((d, t)), every=2)] == [
            3,
            4,
            5,
            6,
            7,
        ]
    assert seen == [(2, 5), (4, 5), (5, 5)]
    with LogpointRun(counted, ["counter.py:16 self.count"]) as run:
        got: list[Hit] = []
        for hit in run.hits(every=1):
            got.append(hit)
            if hit.lsn == 3:
                run.cancel()
        assert run.cancelled and [h.lsn for h in got] == [2, 3]


# -- the command line -----------------------------------------------------------------------------


def test_replay_logpoint_prints_one_line_per_hit_and_json_on_request(counted: Path) -> None:
    home = counted.parent / "home"
    shown = run_cli("replay", str(counted), "--logpoint", "counter.py:16:self.count * 2", home=home)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["2", "3", "4", "5", "6", "7"]
    assert lines[2].endswith("  counter.py:16  self.count * 2 = 4")
    assert "Traceback" not in shown.stderr and "replaying" not in shown.stderr  # no bar: piped
    two = ["--logpoint", "counter.py:16 self.count", "--logpoint", "counter.py:17:1/0"]
    as_json = run_cli("replay", str(counted), *two, "--json", "--from", "4", "--to", "5", home=home)
    assert as_json.returncode == 0, as_json.stderr
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["lsn"], r["line"], r["value"], r["error"]) for r in rows] == [
        (4, 16, 2, None),
        (4, 17, None, "ZeroDivisionError: division by zero"),
        (5, 16, 3, None),
        (5, 17, None, "ZeroDivisionError: division by zero"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--logpoint", "counter.py"], "is not FILE:LINE:EXPR"),
        (["--logpoint", "elsewhere.py:16:1"], "is not a file of the app (its files: counter.py)"),
        (["--logpoint", "counter.py:13:1"], "line 13 has no code"),
        (["--logpoint", "counter.py:16:self.count +"], "is not valid Python"),
        (["--logpoint", "counter.py:16:1", "--verify"], "leave out --verify"),
        (["--logpoint", "counter.py:16:1", "--to", "99"], "are not a range of the log"),
    ],
)
def test_replay_logpoint_bad_input_is_one_line_and_exit_2(
    counted: Path, args: list[str], message: str
) -> None:
    done = run_cli("replay", str(counted), *args, home=counted.parent / "home")
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("immortals: error:")]
    assert done.returncode == 2 and len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_logpoint_in_another_module_of_the_app(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "log", "tests.apps.logpoint_shop:Shop")
    rec.call("sell", "ab", "cde")
    rec.call("sell")
    rec.call("sell", "f")
    rec.close()
    with LogpointRun(tmp_path / "log", ["logpoint_helper.py:9 (item, total)"]) as run:
        assert [(h.lsn, h.nth, h.value) for h in run.hits()] == [
            (2, 0, ("ab", 0)),
            (2, 1, ("cde", 2)),
            (4, 0, ("f", 0)),
        ]
    with pytest.raises(
        LogpointError, match=re.escape("tests/apps/logpoint_helper.py, tests/apps/")
    ):
        LogpointRun(tmp_path / "log", ["nowhere.py:1 x"])


NESTED = """\
from runtime import Immortal, rpc


class Nested(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []

    @rpc
    def scaled(self, factor: int, *values: int) -> list[int]:
        def scale(v: int) -> int:
            return v * factor

        out = [scale(v) for v in values]
        self.seen.extend(out)
        return out
"""


def test_lines_of_a_function_defined_in_a_handler_and_the_def_itself(tmp_path: Path) -> None:
    (tmp_path / "nested.py").write_text(NESTED)
    rec = Recorder(tmp_path / "log", f"{tmp_path / 'nested.py'}:Nested")
    rec.call("scaled", 3, 1, 2)
    rec.call("scaled", 10, 5)
    rec.close()
    specs = ["nested.py:10 factor", "nested.py:11 (v, factor)", "nested.py:14 len(self.seen)"]
    with LogpointRun(tmp_path / "log", specs) as run:
        hits = [(h.logpoint, h.lsn, h.value) for h in run.hits()]
    assert hits == [
        (0, 2, 3),  # the def line runs in the step: the closure is made there
        (1, 2, (1, 3)),
        (1, 2, (2, 3)),
        (2, 2, 0),
        (0, 3, 10),
        (1, 3, (5, 10)),
        (2, 3, 2),
    ]


def test_replay_app_runs_the_logpoint_against_the_given_code(counted: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed.py"
    source = Path("samples/counter/counter.py").read_text()
    changed.write_text(source.replace("self.count += 1", "self.count += 1  # same effect"))
    home = tmp_path / "home"
    shown = run_cli(
        "replay",
        str(counted),
        "--app",
        f"{changed}:Server",
        "--logpoint",
        "changed.py:16 self.count",
        "--to",
        "3",
        home=home,
    )
    assert shown.returncode == 0, shown.stderr
    assert [line.rsplit(" ", 1)[-1] for line in shown.stdout.splitlines()] == ["0", "1"]
    refused = run_cli(
        "replay",
        str(counted),
        "--app",
        f"{changed}:Server",
        "--logpoint",
        "counter.py:16 1",
        home=home,
    )
    assert (
        refused.returncode == 2
        and "is not a file of the app (its files: changed.py)" in refused.stderr
    )


def test_a_range_after_a_checkpoint_starts_from_it_and_the_pass_keeps_no_streams(
    tmp_path: Path,
) -> None:
    rec = Recorder(tmp_path / "log", COUNTER)
    for i in range(8):
        rec.call("inc")
        if i == 3:
            assert rec.checkpoint()  # after step 5
    rec.close()
    with LogpointRun(tmp_path / "log", ["counter.py:16 self.count"], from_lsn=6) as run:
        assert [(h.lsn, h.value) for h in run.hits()] == [(6, 4), (7, 5), (8, 6), (9, 7)]
        assert run.replayer.cache.nearest(9) is None  # no snapshot taken
    with Replayer(tmp_path / "log", keep_streams=False) as r:
        r.state_at(3)
        assert r.state_at(9) == {"count": 8}  # the same states, without the bookkeeping


def test_a_hit_table_gives_a_column_per_logpoint_and_a_steps_hits(recorded: Path) -> None:
    log = recorded / "home" / "logs" / "tally"
    table = HitTable()
    with LogpointRun(log, [f"tally.py:{LOOP} v", f"tally.py:{EVEN} self.total"]) as run:
        table.fill(run, every=2)
        assert (table.done, table.total) == (run.total, run.total)
    assert table.cell(2, 0) == "1 | 2 | 3" and table.cell(2, 1) == "0"
    assert table.cell(3, 0) == "" and table.at(3) == []
    assert [h.logpoint for h in table.at(2)] == [0, 0, 1, 0]
    assert len(table) == sum(len(table.at(lsn)) for lsn in range(1, run.total + 1))


def test_a_progress_bar_on_a_terminal_and_none_when_piped(tmp_path: Path) -> None:
    """A long history shows rich's bar on stderr when stderr is a terminal (a pty here)."""
    import os
    import pty
    import subprocess
    import sys

    from benchmarks.bench_replay import live_rate, write_log

    _rate, records = live_rate(12_000)  # over the CLI's 10,000-step threshold
    write_log(tmp_path / "log", records, lambda _n: None)
    args = ["replay", str(tmp_path / "log"), "--app", COUNTER, "--logpoint", "counter.py:16 1"]
    piped = run_cli(*args, home=tmp_path / "home")
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 12_000
    assert "replaying" not in piped.stderr
    leader, follower = pty.openpty()
    out = tmp_path / "hits.txt"
    with open(out, "wb") as stdout:  # stdout to a file, stderr on the terminal
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "--home", str(tmp_path / "home"), *args],
            stdout=stdout,
            stderr=follower,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
        )
    os.close(follower)  # the child holds the terminal now; read what it draws until it exits
    drawn = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
        assert proc.wait(120) == 0, drawn[-500:]
    assert b"replaying" in drawn
    assert b"counter.py:16" not in drawn  # the hits went where stdout goes, not to the bar
    assert len(out.read_text().splitlines()) == 12_000
