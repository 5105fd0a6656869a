"""The handler sandbox guards each thread on its own: two threads may run handlers at once.

The debugger's background indexer and its interactive replayer both execute steps at the same
time; one thread leaving the guard must neither unguard the other nor leave itself guarded.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replayer import Replayer
from runtime import Immortal, SandboxError, rpc
from runtime import _sandbox as sandbox
from tests.replaylog import Recorder

PROBER = "tests.test_sandbox_threads:Prober"
TIMEOUT = 10.0


def _can_open(path: Path) -> bool:
    """True if this thread may open a file, False if the sandbox refuses it."""
    try:
        with open(str(path), "a"):
            return True
    except SandboxError:
        return False


def _run_threads(*targets: Callable[[], None]) -> None:
    """Run each target on its own thread; re-raise the first failure in the test's thread."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported below, in the test's own thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "a thread is stuck (a barrier was never reached)"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("first_out", ["A", "B"])
def test_one_thread_leaving_does_not_touch_the_other(tmp_path: Path, first_out: str) -> None:
    """A enters, B enters, one leaves: it is free, the other is still guarded; then both leave."""
    barrier = threading.Barrier(3, timeout=TIMEOUT)  # A, B and a thread never guarded
    seen: dict[str, list[bool]] = {"A": [], "B": [], "C": []}

    def guarded_thread(name: str, enters_second: bool) -> Callable[[], None]:
        def run() -> None:
            file = tmp_path / f"{name}.txt"
            if enters_second:
                barrier.wait()  # 1: the other one is in
            token = sandbox.enter()
            try:
                if not enters_second:
                    barrier.wait()  # 1
                barrier.wait()  # 2: both are in
                seen[name].append(_can_open(file))
                barrier.wait()  # 3: both have checked
                if name == first_out:
                    sandbox.leave(token)
                    token = None
                barrier.wait()  # 4: one has left
                seen[name].append(_can_open(file))
                barrier.wait()  # 5: both have checked
            finally:
                if token is not None:
                    sandbox.leave(token)
            barrier.wait()  # 6: both have left
            seen[name].append(_can_open(file))

        return run

    def never_guarded() -> None:
        file = tmp_path / "C.txt"
        for _ in range(6):
            barrier.wait()
            seen["C"].append(_can_open(file))
        seen["C"].append(_start_a_thread())

    _run_threads(guarded_thread("A", False), guarded_thread("B", True), never_guarded)
    other = "B" if first_out == "A" else "A"
    # refused while inside; after its own leave it may open files, the other may not
    assert seen[first_out] == [False, True, True]
    assert seen[other] == [False, False, True]
    assert seen["C"] == [True] * 7
    assert not sandbox._guarded  # nothing left behind


def _start_a_thread() -> bool:
    """True if this thread may start a thread, False if the sandbox refuses it."""
    t = threading.Thread(target=lambda: None)
    try:
        t.start()
    except SandboxError:
        return False
    t.join()
    return True


def test_thread_start_is_refused_only_on_the_guarded_thread() -> None:
    inside = threading.Event()
    done = threading.Event()
    seen: dict[str, bool] = {}

    def guarded_thread() -> None:
        with sandbox.guarded():
            seen["guarded"] = _start_a_thread()
            inside.set()
            assert done.wait(TIMEOUT)

    def free_thread() -> None:
        assert inside.wait(TIMEOUT)
        seen["free"] = _start_a_thread()
        done.set()

    _run_threads(guarded_thread, free_thread)
    assert seen == {"guarded": False, "free": True}


def test_a_thread_never_guarded_is_never_refused(tmp_path: Path) -> None:
    results: list[bool] = []

    def run() -> None:
        results.extend([_can_open(tmp_path / "x.txt"), _start_a_thread()])

    _run_threads(run)
    assert results == [True, True]


def test_enter_and_leave_nest_on_one_thread(tmp_path: Path) -> None:
    file = tmp_path / "x.txt"
    outer = sandbox.enter()
    try:
        inner = sandbox.enter()
        try:
            assert not _can_open(file)
        finally:
            sandbox.leave(inner)
        assert not _can_open(file)  # the outer guard is still on
        with sandbox.guarded():
            assert not _can_open(file)
        assert not _can_open(file)
    finally:
        sandbox.leave(outer)
    assert _can_open(file)
    assert threading.get_ident() not in sandbox._guarded


class Prober(Immortal):
    """An app whose handler tries a file: always refused live, so a replay must be refused too.

    If a replaying thread ran a handler unguarded, ``probe`` would return a different count
    than the log's and the replay would stop with a NondeterminismError.
    """

    def __init__(self) -> None:
        self.total = 0
        self.refused = 0
        self.rolls: list[int] = []

    @rpc
    def add(self, amount: int) -> int:
        self.total += amount
        return self.total

    @rpc
    def roll(self) -> int:
        self.rolls.append(self.random().randint(1, 6))
        return self.rolls[-1]

    @rpc
    def probe(self, path: str) -> int:
        try:
            with open(path, "a"):
                pass
        except SandboxError:
            self.refused += 1
        return self.refused


def test_two_replayers_over_one_log_replay_concurrently(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    probe_file = str(tmp_path / "probe.txt")
    rec = Recorder(log_dir, PROBER)
    for i in range(400):
        if i % 3 == 0:
            rec.call("probe", probe_file)
        elif i % 5 == 1:
            rec.call("roll")
        else:
            rec.call("add", i)
        if i % 50 == 49:
            rec.checkpoint()
    rec.close()
    assert rec.states[-1]["refused"] == 134  # every probe was refused live

    def replay_all(r: Replayer) -> list[Any]:
        states = [r.state_at(lsn) for lsn in range(rec.lsn + 1)]
        states.append([s.state_diff for s in r.steps()])
        states.append(r.verify().ok)
        return states

    with Replayer(log_dir, snapshot_every=10) as alone:
        expected = replay_all(alone)
    assert expected[: rec.lsn + 1] == rec.states and expected[-1]

    barrier = threading.Barrier(2, timeout=TIMEOUT)
    results: dict[int, list[Any]] = {}

    def worker(n: int) -> Callable[[], None]:
        def run() -> None:
            with Replayer(log_dir, snapshot_every=10) as r:
                barrier.wait()  # start together, so the two replays overlap
                results[n] = replay_all(r)

        return run

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: many steps of A overlap steps of B
    try:
        _run_threads(worker(1), worker(2))
    finally:
        sys.setswitchinterval(interval)
    assert results[1] == expected
    assert results[2] == expected
    assert not sandbox._guarded
