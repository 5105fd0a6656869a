"""The patterns an author uses first, in real instance processes (issue 13, items 1, 2 and 5)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runtime import CallTimeoutError, RemoteError, connect
from tests._instances import Cluster, run_cli

APPS = "tests/apps/patterns.py"


def _until(predicate, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_posting_to_yourself_and_a_timer_callback_work_across_a_sigkill(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = Cluster(home)
    try:
        looper = cluster.start(f"{APPS}:Looper", "looper")
        with connect(home, timeout=20) as client:
            _until(lambda: client.call("looper", "progress")[0] >= 5, "some steps")
            looper.kill()
            looper.start()
            _until(lambda: client.call("looper", "progress") == [20, 5], "all steps and ticks")
            time.sleep(0.3)  # nothing more is scheduled: nothing more happens
            assert client.call("looper", "progress") == [20, 5]
        steps = [json.loads(line)[1] for line in looper.stdout]
        assert sorted(set(steps)) == list(range(20))  # every step once (a line may print twice)
        assert not [line for line in looper.stderr if "link to" in line or "impostor" in line]
    finally:
        cluster.stop_all()


def test_print_goes_to_stderr_tagged_and_replay_keeps_quiet(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = Cluster(home)
    try:
        noisy = cluster.start(f"{APPS}:Noisy", "noisy")
        with connect(home, timeout=20) as client:
            assert client.call("noisy", "hello", "world") == 1
        noisy.stop()
    finally:
        cluster.stop_all()
    assert noisy.stdout == ['"hello world"']  # stdout carries emits only
    assert any(line.startswith("[noisy LSN 2] hello world") for line in noisy.stderr)
    replay = run_cli("replay", "noisy", home=home)
    assert replay.returncode == 0, replay.stderr
    assert "[noisy LSN" not in replay.stdout + replay.stderr


def test_an_asyncio_refusal_replays_without_a_false_divergence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = Cluster(home)
    try:
        cluster.start(f"{APPS}:Noisy", "noisy")
        with connect(home, timeout=20) as client:
            refused = client.call("noisy", "concurrently")
        assert refused[0] == "refused" and "self.gather()" in refused[1]
    finally:
        cluster.stop_all()
    verify = run_cli("replay", "noisy", "--verify", home=home)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_remote_error_names_the_callees_step(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = Cluster(home)
    try:
        cluster.start(f"{APPS}:Noisy", "a")
        cluster.start(f"{APPS}:Noisy", "b")
        with connect(home, timeout=20) as client:
            type_name, message, lsn = client.call("a", "ask_other", "b")
            assert (type_name, message) == ("KeyError", "'no such account'")
            assert lsn == 2  # b's step 1 is its start, step 2 the failing call
            with pytest.raises(RemoteError) as raised:  # an outside caller gets the step too
                client.call("b", "fail")
            assert (raised.value.type_name, raised.value.lsn) == ("KeyError", 3)
    finally:
        cluster.stop_all()


def test_the_replayer_and_the_debugger_show_the_new_kinds_of_steps(tmp_path: Path) -> None:
    """Timer callbacks, posts to itself and side effects, in `immortals replay` and the
    debugger's effects pane (a callback timer has four fields where a sleep has two)."""
    import asyncio

    from debugger import DebuggerApp
    from debugger._effects import EffectsView
    from tests.test_debugger import SIZE, keys, settle
    from tests.test_debugger_newcomer import text_of

    home = tmp_path / "home"
    cluster = Cluster(home)
    try:
        cluster.start(f"{APPS}:Looper", "looper")
        with connect(home, timeout=20) as client:
            _until(lambda: client.call("looper", "progress") == [20, 5], "all steps and ticks")
    finally:
        cluster.stop_all()
    replay = run_cli("replay", "looper", home=home)
    assert replay.returncode == 0, replay.stderr
    assert "-> timer #1 calls tick()" in replay.stdout
    assert "-> call looper.step(1)" in replay.stdout

    async def walk() -> list[str]:
        app = DebuggerApp(home / "logs" / "looper")
        shown: list[str] = []
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            for _ in range(8):
                shown.append(text_of(app.query_one(EffectsView)))
                await keys(pilot, "j")
        return shown

    panes = "\n".join(asyncio.run(walk()))
    assert "calls tick()" in panes


def test_a_hung_side_effect_neither_blocks_other_calls_nor_a_clean_stop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = Cluster(home)
    try:
        hanger = cluster.start(f"{APPS}:Hanger", "hanger")
        with connect(home, timeout=20) as client:
            client.call("hanger", "ping")
            with pytest.raises(CallTimeoutError), connect(home, timeout=0.5) as impatient:
                impatient.call("hanger", "wait_forever", key="w")  # never answered
            assert client.call("hanger", "ping") == "pong"  # the effect runs off the loop
        started = time.monotonic()
        assert hanger.stop() == 0
        assert time.monotonic() - started < 10
    finally:
        cluster.stop_all()
