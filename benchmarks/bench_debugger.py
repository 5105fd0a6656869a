"""Debugger benchmark: open a 1,000,000-step log, then jump around it.

    python -m benchmarks.bench_debugger [--quick] [--out DIR]

The debugger runs headless (Textual's ``run_test``) at 120x36 over a counter log written the way
a busy instance writes it (64 steps per frame) with the default checkpoint interval, which on a
log of this size means no checkpoint. Measured:

* open to first screen: from constructing the app to the first rows drawn and the first step
  shown in every pane; with the log's index present, and once more with it deleted (the first
  open of a copied log rebuilds it);
* a jump to a random LSN until every pane shows it, before the background index is ready
  (each jump replays from the start) and after it (snapshots every 1,000 steps).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from benchmarks._report import Column, render
from benchmarks.bench_replay import APP, live_rate, write_log
from debugger import DebuggerApp

SIZE = (120, 36)


async def _until(condition: Any, timeout: float = 120.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the debugger did not get there in time")
        await asyncio.sleep(0.001)


def _shows(app: DebuggerApp, lsn: int) -> bool:
    history = app.history
    return (
        app.view is not None
        and app.view.step.lsn == lsn
        and history is not None
        and history.cached_row(lsn) is not None
    )


async def open_time(log: Path) -> float:
    """Seconds from constructing the app to its first complete screen."""
    started = time.perf_counter()
    app = DebuggerApp(log, app=APP, index=False)
    async with app.run_test(size=SIZE) as pilot:
        await _until(lambda: _shows(app, 1))
        await pilot.pause()
        return time.perf_counter() - started


async def jump_times(log: Path, lsns: list[int], cold: int, advance: Any) -> dict[str, Any]:
    """Jump times before the background index is ready (``cold`` jumps) and after it."""
    app = DebuggerApp(log, app=APP, index=False)
    before: list[float] = []
    after: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        await _until(lambda: _shows(app, 1))

        async def jump(lsn: int) -> float:
            started = time.perf_counter()
            app.timeline.go(lsn)
            await _until(lambda: _shows(app, lsn), timeout=600)
            await pilot.pause()
            return time.perf_counter() - started

        for lsn in lsns[:cold]:
            before.append(await jump(lsn))
            advance()
        started = time.perf_counter()
        app._index()
        await app.workers.wait_for_complete()
        indexing = time.perf_counter() - started
        for lsn in lsns[cold:]:
            after.append(await jump(lsn))
            advance()
    return {"before": before, "after": after, "indexing": indexing}


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


def run(*, quick: bool, out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    steps = 100_000 if quick else 1_000_000
    cold, warm = (2, 20) if quick else (3, 60)
    rng = random.Random(11)
    lsns = [rng.randint(2, steps) for _ in range(cold + warm)]
    with (
        tempfile.TemporaryDirectory(prefix="immortals-debug-") as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        log = Path(tmp) / "server"
        task = progress.add_task(f"recording {steps:,} steps", total=None)
        _rate, records = live_rate(steps - 1)
        progress.update(task, description="writing the log", total=len(records))
        write_log(log, records, lambda k: progress.advance(task, k))
        del records
        progress.update(task, description="opening", total=None)
        opened = asyncio.run(open_time(log))
        shutil.rmtree(log / "index")
        opened_no_index = asyncio.run(open_time(log))
        progress.update(task, description="jumping to random steps", total=len(lsns), completed=0)
        jumps = asyncio.run(jump_times(log, lsns, cold, lambda: progress.advance(task)))
    rows = [
        {"measure": f"open a {steps:,}-step log, first screen", "value": opened * 1e3},
        {"measure": "same, index deleted (rebuilt on open)", "value": opened_no_index * 1e3},
        {
            "measure": "jump to a random LSN, before indexing, p50",
            "value": _p50(jumps["before"]) * 1e3,
        },
        {"measure": "background indexing pass", "value": jumps["indexing"] * 1e3},
        {
            "measure": "jump to a random LSN, after indexing, p50",
            "value": _p50(jumps["after"]) * 1e3,
        },
        {
            "measure": "jump to a random LSN, after indexing, max",
            "value": max(jumps["after"]) * 1e3,
        },
    ]
    warm_p50 = _p50(jumps["after"]) * 1e3
    notes = [
        f"{'PASS' if opened < 1.5 else 'MISS'}: first screen in {opened:.2f} s (goal < 1.5 s)",
        f"{'PASS' if warm_p50 < 300 else 'MISS'}: random jump and redraw p50 {warm_p50:.0f} ms "
        "once the background index is ready (goal < 300 ms)",
        f"before the index is ready a jump replays from step 1: p50 "
        f"{_p50(jumps['before']):.1f} s; the index took {jumps['indexing']:.1f} s",
    ]

    def plot(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        labels = ["open", "open\n(no index)", "jump\n(cold)", "jump\n(indexed)"]
        ax.bar(labels, [rows[0]["value"], rows[1]["value"], rows[2]["value"], rows[4]["value"]])
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"immortals debug on a {steps:,}-step log")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    render(
        "debugger_bench",
        "Debugger benchmark" + (" (quick)" if quick else ""),
        [Column("measure", "measure"), Column("value", "ms", "{:,.1f}")],
        rows,
        out_dir=out_dir,
        notes=notes,
        plot=plot,
        console=console,
    )
    return {"rows": rows, "notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller log, for a smoke test")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    run(quick=args.quick, out_dir=args.out)


if __name__ == "__main__":
    main()
