"""The replayer re-creates exactly the states and effects a live instance went through."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replayer import NondeterminismError, Replayer, ReplayError, diff_states, format_path
from tests._instances import run_cli
from tests.replaylog import Recorder

ACCOUNT = "tests/apps/accounts.py:Account"
COUNTER = "samples/counter/counter.py:Server"
GOLDEN = Path(__file__).parent / "fixtures" / "replay"

# -- a workload generator: what a live Account instance could go through -------------------------

action = st.one_of(
    st.tuples(st.just("deposit"), st.integers(1, 50)),
    st.tuples(st.just("withdraw"), st.integers(1, 80)),
    st.tuples(st.just("transfer"), st.sampled_from(["bob", "carol"]), st.integers(1, 30)),
    st.tuples(st.just("nap"), st.sampled_from([0.5, 2.0])),
    st.tuples(st.just("stamp")),
    st.tuples(st.just("reply"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("fire"), st.integers(0, 5)),
    st.tuples(st.just("checkpoint")),
)


def record_workload(log_dir: Path, actions: list[tuple[Any, ...]]) -> Recorder:
    """Run ``actions`` live, answering the instance's calls and firing its timers as told."""
    rec = Recorder(log_dir, ACCOUNT)
    calls: list[tuple[str, int]] = []  # outgoing calls waiting for a reply
    timers: list[int] = []
    peer_seq: dict[str, int] = {}
    for act in actions:
        kind = act[0]
        if kind in ("deposit", "withdraw", "transfer", "nap", "stamp"):
            record = rec.call(kind, *act[1:])
            calls += [(m[0], m[1]) for m in record.get("out", ()) if m[2] == "c"]
            timers += [tid for tid, _due in record.get("tim", ())]
        elif kind == "reply" and calls:
            target, seq = calls.pop(act[1] % len(calls))
            peer_seq[target] = peer_seq.get(target, 0) + 1
            inp: dict[str, Any] = {"k": "reply", "from": target, "seq": peer_seq[target], "re": seq}
            if act[2]:
                inp["ok"] = 1000
            else:
                inp["err"] = ["ValueError", "account closed"]
            rec.step(inp)
        elif kind == "fire" and timers:
            rec.step({"k": "timer", "tid": timers.pop(act[1] % len(timers))})
        elif kind == "checkpoint":
            rec.checkpoint()
    rec.close()
    return rec


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=st.lists(action, min_size=1, max_size=60), every=st.sampled_from([1, 3, 1000]))
def test_state_at_every_step_equals_the_live_state(
    tmp_path: Path, actions: list[tuple[Any, ...]], every: int
) -> None:
    log_dir = tmp_path / "log"
    shutil.rmtree(log_dir, ignore_errors=True)
    rec = record_workload(log_dir, actions)
    with Replayer(log_dir, snapshot_every=every) as r:
        assert r.last_lsn == rec.lsn
        for lsn in range(rec.lsn + 1):  # forward, one step at a time
            assert r.state_at(lsn) == rec.states[lsn], lsn
        for lsn in reversed(range(1, rec.lsn + 1)):  # backward, over snapshots and checkpoints
            assert r.state_at(lsn) == rec.states[lsn], lsn
        steps = list(r.steps())
    assert [s.lsn for s in steps] == list(range(1, rec.lsn + 1))
    for step in steps:  # effects are the recorded ones, the diff is the state change
        recorded = rec.records[step.lsn]
        assert step.nondeterminism == recorded.get("nd", [])
        assert len(step.effects["calls"]) + len(step.effects["replies"]) == len(
            recorded.get("out", ())
        ) + len(recorded.get("rep", ()))
        assert step.state_diff == diff_states(rec.states[step.lsn - 1], rec.states[step.lsn])


def test_steps_report_inputs_effects_and_a_structured_diff(tmp_path: Path) -> None:
    rec = record_workload(
        tmp_path / "log",
        [("deposit", 10), ("transfer", "bob", 4), ("reply", 0, True), ("withdraw", 99)],
    )
    with Replayer(tmp_path / "log") as r:
        start, deposit, transfer, reply, withdraw = list(r.steps())
    assert start.input == {"k": "start"} and start.state_diff[0].path == ()
    assert deposit.effects["replies"] == [["key-2", True, 10]]
    assert [(c.kind, format_path(c.path), c.old, c.new) for c in deposit.state_diff] == [
        ("changed", "balance", 0, 10),
        ("added", "history[0]", None, ["deposit", 10]),
    ]
    assert transfer.effects["calls"] == [["bob", 1, "deposit", [4], True]]
    assert transfer.effects["replies"] == []  # still waiting for bob
    assert reply.input["k"] == "reply" and reply.effects["replies"] == [["key-3", True, "sent"]]
    assert withdraw.effects["replies"][0][:2] == ["key-5", False]
    assert withdraw.effects["replies"][0][2][0] == "ValueError"
    assert withdraw.state_diff == []  # the exception changed nothing
    assert rec.states[-1]["balance"] == 6


def test_verify_finds_nothing_on_an_honest_log(tmp_path: Path) -> None:
    record_workload(tmp_path / "log", [("deposit", 5), ("stamp",), ("nap", 0.5), ("fire", 0)])
    with Replayer(tmp_path / "log") as r:
        report = r.verify()
    assert report.ok and report.steps == 5


def test_verify_finds_a_planted_divergence_at_its_lsn(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "log", ACCOUNT)
    rec.call("deposit", 5)
    record = rec.executor.execute({"k": "call", "id": "k3", "m": "deposit", "a": [7]}, lsn=3)
    record["rep"] = [["k3", True, 999]]  # the log says 999; the code computes 12
    rec.writer.append([record])
    rec.executor.execute({"k": "call", "id": "k4", "m": "deposit", "a": [1]}, lsn=4)
    rec.writer.append(
        [{"in": {"k": "call", "id": "k4", "m": "deposit", "a": [1]}, "rep": [["k4", True, 13]]}]
    )
    rec.close()
    with Replayer(tmp_path / "log") as r:
        report = r.verify()
        assert [(d.lsn, d.what, d.expected, d.actual) for d in report.divergences] == [
            (3, "results", [["k3", True, 999]], [["k3", True, 12]])
        ]
        with pytest.raises(NondeterminismError, match="step 3"):
            r.state_at(4)  # stepping through history stops at the divergence
    result = run_cli("replay", str(tmp_path / "log"), "--verify", home=tmp_path / "home")
    assert result.returncode == 1
    assert "step 3: results: recorded" in result.stdout


def test_trace_reports_the_lines_run_in_order_with_their_locals(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "log", ACCOUNT)
    rec.call("deposit", 50)
    rec.call("withdraw", 20)
    rec.close()
    source = Path("tests/apps/accounts.py").read_text().splitlines()
    with Replayer(tmp_path / "log") as r:
        trace = r.trace(3)
    ran = [(source[t.line - 1].strip(), t.event) for t in trace.lines]
    assert ran == [
        ("if amount > self.balance:", "line"),
        ("self.balance -= amount", "line"),
        ('self.history.append(["withdraw", amount])', "line"),
        ("return self.balance", "line"),
        ("return self.balance", "return"),
    ]
    assert all(t.function == "withdraw" for t in trace.lines)
    assert trace.lines[0].locals == {"self": "<Account>", "amount": 20}
    assert trace.lines[-1].locals["<return>"] == 30
    assert trace.step.state_diff[0].new == 30


def test_trace_follows_an_await_resumed_by_a_reply(tmp_path: Path) -> None:
    record_workload(
        tmp_path / "log", [("deposit", 10), ("transfer", "bob", 4), ("reply", 0, False)]
    )
    with Replayer(tmp_path / "log") as r:
        trace = r.trace(4)  # the reply: the coroutine resumes inside transfer()
    assert trace.lines[0].function == "transfer"
    assert trace.lines[0].locals["to"] == "bob"
    assert any("exc" in t.locals for t in trace.lines)  # the except branch ran
    assert trace.step.effects["replies"][0][2].startswith("refused")


def test_find_goes_both_ways_and_across_checkpoints(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "log", COUNTER)
    for i in range(1, 301):
        rec.call("inc")
        if i % 70 == 0:
            rec.checkpoint()
    rec.close()
    # After step n the count is n - 1 (step 1 is the start).
    with Replayer(tmp_path / "log", snapshot_every=50) as r:
        assert r.find(lambda s, i, e: s["count"] % 100 == 0 and s["count"] > 0, start=0) == 101
        assert r.find(lambda s, i, e: s["count"] % 100 == 0, start=150) == 201
        assert r.find(lambda s, i, e: s["count"] % 100 == 0, start=150, direction="backward") == 101
        assert r.find(lambda s, i, e: s["count"] % 97 == 0, direction="backward") == 292
        assert r.find(lambda s, i, e: s["count"] == 0, start=250, direction="backward") == 1
        assert r.find(lambda s, i, e: s["count"] > 10_000, start=0) is None
        assert r.find(lambda s, i, e: e["replies"] and e["replies"][0][2] == 42, start=0) == 43
        assert r.find_change(lambda s: s["count"] // 60, start=200, direction="backward") == 181
        assert r.find_change(lambda s: s["count"] // 60, start=200) == 241


@pytest.fixture
def counted_log(tmp_path: Path) -> Path:
    """A counter's log of 21 steps: after step n the count is n - 1."""
    rec = Recorder(tmp_path / "log", COUNTER)
    for _ in range(20):
        rec.call("inc")
    rec.close()
    return tmp_path / "log"


def test_find_takes_a_predicate_of_the_state_alone(counted_log: Path) -> None:
    def over_five(state: Any) -> bool:
        return bool(state["count"] > 5)

    with Replayer(counted_log) as r:
        assert r.find(lambda state: state["count"] == 7, start=0) == 8
        assert r.find(over_five, direction="backward") == 21
        assert r.find(lambda state, *rest: state["count"] == 3, start=0) == 4  # fits both: full


def test_find_raises_what_the_predicate_raises(counted_log: Path) -> None:
    with Replayer(counted_log) as r, pytest.raises(KeyError, match="balance") as caught:
        r.find(lambda state, inp, fx: state["balance"] > 3, start=0)
    assert "at LSN 1" in "".join(caught.value.__notes__)
    with Replayer(counted_log) as r, pytest.raises(ZeroDivisionError):
        r.find(lambda state: 1 / 0, start=0)
    with Replayer(counted_log) as r, pytest.raises(TypeError, match="oops"):
        r.find(lambda state: _raise(TypeError("oops")), start=0)  # not taken for a wrong arity


def _raise(exc: Exception) -> None:
    raise exc


@pytest.mark.parametrize(
    "predicate",
    [lambda: True, lambda state, inp: True, lambda s, i, e, extra: True, lambda *, state: True],
    ids=["none", "two", "four", "keyword-only"],
)
def test_a_predicate_of_another_arity_is_refused_up_front(
    counted_log: Path, predicate: Any
) -> None:
    with Replayer(counted_log) as r:
        with pytest.raises(TypeError, match=r"\(state\) or of \(state, input, effects\)"):
            r.find(predicate, start=0)
        assert r.position == -1  # refused before replaying anything


def test_a_trimmed_log_replays_from_its_checkpoint(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "log", COUNTER)
    for _ in range(40):
        rec.call("inc")
    rec.checkpoint()
    for _ in range(5):
        rec.call("inc")
    rec.close()
    with Replayer(tmp_path / "log") as r:
        assert r.state_at(43) == {"count": 42}
        assert r.state_at(41) == {"count": 40}


def test_snapshots_spilled_to_disk_serve_the_next_replayer(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "log", COUNTER)
    for _ in range(120):
        rec.call("inc")
    rec.close()
    with Replayer(tmp_path / "log", snapshot_every=25, spill=True) as r:
        assert r.verify().ok
    spilled = list((tmp_path / "log" / "replay-cache").rglob("*.snap"))
    assert len(spilled) == 4  # after steps 25, 50, 75, 100
    with Replayer(tmp_path / "log", snapshot_every=25, spill=True) as r:
        assert len(r.cache) == 4
        assert r.state_at(110) == {"count": 109}
        assert r.position == 110
    # A damaged snapshot file is only a cache: it is ignored.
    for path in spilled:
        path.write_bytes(b"garbage")
    with Replayer(tmp_path / "log", snapshot_every=25, spill=True) as r:
        assert r.state_at(110) == {"count": 109}


# -- golden logs: one per log-format version, replayed on every run -------------------------------


@pytest.mark.parametrize("golden", sorted(p for p in GOLDEN.iterdir() if p.is_dir()), ids=str)
def test_golden_logs_replay_to_their_recorded_states(golden: Path, tmp_path: Path) -> None:
    expected = json.loads((golden / "expected.json").read_text())
    log = tmp_path / "log"
    shutil.copytree(golden / "log", log)  # opening builds an index: keep the fixture clean
    assert list((log / "checkpoints").glob("*.ckpt")), "a golden log has a checkpoint to start from"
    with Replayer(log) as r:  # the app named in the log's metadata
        assert r.verify().ok
        for lsn, state in expected["states"].items():
            assert r.state_at(int(lsn)) == state


# -- bad input -------------------------------------------------------------------------------------


def _error_line(result: Any) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "log", COUNTER)
    rec.call("inc")
    rec.close()
    home = tmp_path / "home"
    log = str(tmp_path / "log")
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    assert "importing" in _error_line(run_cli("replay", log, "--app", f"{broken}:X", home=home))
    assert "is not a subclass of runtime.Immortal" in _error_line(
        run_cli("replay", log, "--app", "tests/replaylog.py:Recorder", home=home)
    )
    wrong = _error_line(
        run_cli("replay", log, "--app", "samples/counter/counter.py:Client", home=home)
    )
    assert "step 1: replay diverged" in wrong  # another app's code does not reproduce the log
    assert "outside the log" in _error_line(run_cli("replay", log, "--state-at", "9", home=home))
    assert "outside the log" in _error_line(run_cli("replay", log, "--from", "5", home=home))
    assert "is not an immortals log" in _error_line(run_cli("replay", str(tmp_path), home=home))
    with Replayer(tmp_path / "log") as r, pytest.raises(ReplayError, match="outside the log"):
        r.state_at(3)


def test_the_app_is_found_beside_the_home_when_run_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logs name the app as `immortals run` got it, often relative to the project folder."""
    project = tmp_path / "project"
    (project / "apps").mkdir(parents=True)
    shutil.copy("samples/counter/counter.py", project / "apps" / "counter.py")
    monkeypatch.chdir(project)
    rec = Recorder(project / ".immortals" / "logs" / "server", "apps/counter.py:Server")
    rec.call("inc")
    rec.close()
    monkeypatch.chdir(tmp_path)  # somewhere else: apps/counter.py is not here
    with Replayer("server", home=project / ".immortals") as r:
        assert r.state_at(2) == {"count": 1}
