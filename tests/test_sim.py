"""The deterministic simulator: the real coordinator holds; each planted bug is caught.

`make sim` runs 2,000 seeds; here a few hundred keep `make test` quick. A failure message lists
the command that replays the failing seed with a trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.sim import WORKLOADS, repro_command, run_seed
from tests.sim_planted import PLANTED, PLANTED_DRIVERS

REPO = Path(__file__).resolve().parent.parent
SEEDS = 320  # 32 of each workload
STANDBY_SEEDS = 200
DRIVER_BUDGET = 50  # seeds of the standby workload a planted driver bug may take to show
PLANTED_BUDGET = 800  # seeds a planted bug may take to show (the slowest takes about 400)


def test_the_coordinator_holds_over_many_seeds() -> None:
    failures = []
    totals = dict.fromkeys(("crashes", "dropped", "duplicated", "reordered", "torn"), 0)
    for seed in range(SEEDS):
        result = run_seed(seed)
        for key in totals:
            totals[key] += getattr(result, key)
        if not result.ok:
            failures.append(
                f"seed {seed}: {result.violations[:3]}\n  {repro_command(seed, result.workload)}"
            )
    assert not failures, "\n".join(failures)
    for key, count in totals.items():
        assert count > 0, f"no seed injected any {key}: the simulator is not testing that fault"


@pytest.mark.parametrize("planted", PLANTED, ids=lambda cls: cls.__name__)
def test_each_planted_bug_is_caught(planted: type) -> None:
    for seed in range(PLANTED_BUDGET):
        result = run_seed(seed, coordinator_cls=planted)
        if not result.ok:
            print(
                f"{planted.__name__}: caught by seed {seed} ({seed + 1} seeds), {result.workload}"
            )
            return
    pytest.fail(f"{planted.__name__} survived {PLANTED_BUDGET} seeds")


def test_standbys_take_over_and_zombies_are_fenced_over_many_seeds() -> None:
    failures = []
    takeovers = zombies = 0
    for seed in range(STANDBY_SEEDS):
        result = run_seed(seed, "standby")
        takeovers += result.takeovers
        zombies += result.zombies
        if not result.ok:
            failures.append(
                f"seed {seed}: {result.violations[:3]}\n  {repro_command(seed, 'standby')}"
            )
    assert not failures, "\n".join(failures)
    assert takeovers > STANDBY_SEEDS, "standbys hardly ever took over"
    assert zombies > STANDBY_SEEDS // 4, "hardly any primary was paused past its lease"


@pytest.mark.parametrize("planted", PLANTED_DRIVERS, ids=lambda cls: cls.__name__)
def test_each_planted_driver_bug_is_caught(planted: type) -> None:
    for seed in range(DRIVER_BUDGET):
        result = run_seed(seed, "standby", driver_cls=planted)
        if not result.ok:
            assert any("claimed the log" in v for v in result.violations), result.violations
            print(f"{planted.__name__}: caught by seed {seed} ({seed + 1} seeds)")
            return
    pytest.fail(f"{planted.__name__} survived {DRIVER_BUDGET} seeds of the standby workload")


def test_every_workload_runs_and_settles() -> None:
    for name in WORKLOADS:
        result = run_seed(1, name)
        assert result.ok, (name, result.violations)
        assert result.events > 10, name


def test_one_seed_is_one_run() -> None:
    first = run_seed(11, keep_trace=True)
    second = run_seed(11, keep_trace=True)
    assert first.trace == second.trace
    assert len(first.trace) > 50


def _sim(*args: str, hashseed: str = "0") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED=hashseed)
    return subprocess.run(
        [sys.executable, "-m", "runtime.sim", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def test_the_repro_line_replays_the_same_run_in_another_process() -> None:
    # String hashing differs between processes; the run must not.
    one = _sim("--seeds", "1", "--first", "10", "--workload", "mixed", "--trace", hashseed="1")
    two = _sim("--seeds", "1", "--first", "10", "--workload", "mixed", "--trace", hashseed="2")
    assert one.returncode == two.returncode == 0, one.stderr
    trace_one, trace_two = (run.stdout.split(" seeds in ")[0] for run in (one, two))
    assert trace_one == trace_two  # (the table after it shows the time each run took)
    assert "CRASH" in one.stdout and "net:" in one.stdout


def test_a_failing_seed_prints_the_line_that_replays_it() -> None:
    done = _sim("--seeds", "3", "--first", "0", "--coordinator", "tests.sim_planted:ResendSkipsOne")
    assert done.returncode == 1
    assert (
        "replay: python -m runtime.sim --seeds 1 --first 0 --workload chain --trace" in done.stdout
    )
    assert "--coordinator tests.sim_planted:ResendSkipsOne" in done.stdout


def test_bad_arguments_are_one_line() -> None:
    done = _sim("--seeds", "0")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
