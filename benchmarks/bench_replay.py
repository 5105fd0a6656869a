"""Replay benchmark: how fast history re-executes, and how fast any step's state can be had.

    python -m benchmarks.bench_replay [--quick] [--out DIR]

Measured for the counter app (``samples/counter/counter.py:Server``), in one run:

* live execution rate: the runtime's executor in live mode over N calls (no log I/O), the
  figure replay is compared with;
* replay rate: ``Replayer.verify()`` over a log of the same N steps, grouped 64 to a frame as a
  busy instance's group commit writes them (read, decode, re-execute, compare every effect);
* ``state_at`` on random LSNs of a 1,000,000-step log (100,000 with ``--quick``) with the
  default checkpoint interval. A live instance checkpoints every 64 MiB of log or 60 s, so such a
  log has no checkpoint in practice and none is written. Cold: the first ``state_at`` with no
  snapshot at all (a replay from step 1). Warm: after one pass that spills snapshots beside the
  index, a fresh replayer (a new session) finds them: p50 and p99 over random LSNs, and one step
  forward or back from where it stands.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from benchmarks._report import Column, render
from logformat import LogMeta, LogWriter
from replayer import Replayer
from runtime._apps import load_app
from runtime._executor import Executor

APP = "samples/counter/counter.py:Server"
FRAME = 64  # records per frame, as group commit writes them under load


def _inputs(n: int) -> list[dict[str, Any]]:
    return [{"k": "start"}] + [{"k": "call", "id": f"k{i}", "m": "inc", "a": []} for i in range(n)]


def live_rate(n: int) -> tuple[float, list[dict[str, Any]]]:
    """Steps per second of the live executor, and the step records it produced."""
    app = load_app(APP)
    executor = Executor(app.cls, name="server")
    inputs = _inputs(n)
    started = time.perf_counter()
    records = [executor.execute(inp, lsn=i + 1) for i, inp in enumerate(inputs)]
    return len(records) / (time.perf_counter() - started), records


def write_log(path: Path, records: list[dict[str, Any]], advance: Any) -> None:
    app = load_app(APP)
    meta = LogMeta("server", APP, app.code_version)
    with LogWriter.open(path, create=meta, sync=False) as writer:
        for i in range(0, len(records), FRAME):
            writer.append(records[i : i + FRAME])
            advance(min(FRAME, len(records) - i))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run(*, quick: bool, out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    rate_n = 50_000 if quick else 200_000
    big_n = 100_000 if quick else 1_000_000
    samples = 50 if quick else 200
    rng = random.Random(7)
    with (
        tempfile.TemporaryDirectory(prefix="immortals-replay-") as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        folder = Path(tmp)
        task = progress.add_task("live execution", total=None)
        live, records = live_rate(rate_n)
        progress.update(task, description="writing the rate log", total=len(records))
        write_log(folder / "rate", records, lambda k: progress.advance(task, k))
        progress.update(task, description="replaying (verify)", total=None)
        with Replayer(folder / "rate", app=APP) as r:
            started = time.perf_counter()
            report = r.verify()
            replay = report.steps / (time.perf_counter() - started)
        assert report.ok
        progress.update(task, description=f"recording {big_n:,} steps", completed=0)
        _live, records = live_rate(big_n)
        progress.update(task, description="writing the 1M-step log", total=len(records))
        write_log(folder / "big", records, lambda k: progress.advance(task, k))
        del records
        last = big_n + 1
        with Replayer(folder / "big", app=APP) as r:
            started = time.perf_counter()
            r.state_at(rng.randint(last // 2, last))
            cold = time.perf_counter() - started
        progress.update(task, description="indexing pass (snapshots spilled)", total=last)
        with Replayer(folder / "big", app=APP, spill=True) as r:
            started = time.perf_counter()
            r.verify(progress=lambda lsn: progress.update(task, completed=lsn))
            indexing = time.perf_counter() - started
        progress.update(task, description="state_at on random steps", total=samples, completed=0)
        jumps, forward, back = [], [], []
        with Replayer(folder / "big", app=APP, spill=True) as r:
            for _ in range(samples):
                lsn = rng.randint(2, last - 1)
                started = time.perf_counter()
                r.state_at(lsn)
                jumps.append(time.perf_counter() - started)
                started = time.perf_counter()
                r.state_at(lsn + 1)
                forward.append(time.perf_counter() - started)
                started = time.perf_counter()
                r.state_at(lsn)
                back.append(time.perf_counter() - started)
                progress.advance(task)
    rows = [
        {"measure": "live execution (executor only)", "value": live, "unit": "steps/s"},
        {
            "measure": "replay (verify: read, re-execute, compare)",
            "value": replay,
            "unit": "steps/s",
        },
        {"measure": "replay / live", "value": replay / live, "unit": "x"},
        {
            "measure": f"state_at, cold (no snapshot, {big_n:,} steps)",
            "value": cold * 1e3,
            "unit": "ms",
        },
        {"measure": "indexing pass (verify, spill snapshots)", "value": indexing, "unit": "s"},
        {
            "measure": "state_at random LSN, warm, p50",
            "value": _percentile(jumps, 0.5) * 1e3,
            "unit": "ms",
        },
        {
            "measure": "state_at random LSN, warm, p99",
            "value": _percentile(jumps, 0.99) * 1e3,
            "unit": "ms",
        },
        {
            "measure": "one step forward, p50",
            "value": _percentile(forward, 0.5) * 1e3,
            "unit": "ms",
        },
        {"measure": "one step back, p50", "value": _percentile(back, 0.5) * 1e3, "unit": "ms"},
    ]
    jump_p50 = _percentile(jumps, 0.5) * 1e3
    step_p50 = max(_percentile(forward, 0.5), _percentile(back, 0.5)) * 1e3
    notes = [
        _goal(replay >= 100_000, f"replay rate {replay:,.0f} steps/s (goal >= 100,000)"),
        _goal(replay >= 0.5 * live, f"replay / live = {replay / live:.2f} (goal >= 0.5)"),
        _goal(jump_p50 < 250, f"state_at random LSN p50 {jump_p50:.1f} ms (goal < 250 ms)"),
        _goal(step_p50 < 20, f"one step back or forward p50 {step_p50:.2f} ms (goal < 20 ms)"),
    ]

    def plot(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.bar(["live", "replay"], [live, replay], color=["#888888", "#3b7dd8"])
        left.set_ylabel("steps / s")
        left.set_title("execution rate, counter app")
        right.bar(
            ["random\np50", "random\np99", "step fwd\np50", "step back\np50"],
            [row["value"] for row in rows[5:9]],
            color="#3b7dd8",
        )
        right.set_yscale("log")
        right.set_ylabel("ms")
        right.set_title(f"state_at on a {big_n:,}-step log (warm)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    columns = [
        Column("measure", "measure"),
        Column("value", "value", "{:,.2f}"),
        Column("unit", "unit"),
    ]
    render(
        "replay_bench",
        "Replay benchmark" + (" (quick)" if quick else ""),
        columns,
        rows,
        out_dir=out_dir,
        notes=notes,
        plot=plot,
        console=console,
    )
    return {"rows": rows, "notes": notes}


def _goal(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'MISS'}: {text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller logs, for a smoke test")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    run(quick=args.quick, out_dir=args.out)


if __name__ == "__main__":
    main()
