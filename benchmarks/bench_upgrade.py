"""The pause a live upgrade causes: the longest gap between replies seen by a client calling in
a loop while ``immortals upgrade live`` replaces the instance, over repeated upgrades.

    python -m benchmarks.bench_upgrade [--upgrades 20]

Each round writes a new version of a counter (the same behaviour, another code version) and
takes over the running instance with it; a client thread calls ``inc`` in a loop throughout,
and the longest gap between two of its replies around each takeover is that round's pause.
The issue's goal: p50 under 200 ms on this machine. The table is printed and saved under
``benchmarks/results/`` (``upgrade_bench``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._instances import CallingLoop, immortals, stop_all, wait_for
from benchmarks._report import Column, render

APP = """
from runtime import Immortal, rpc

class Counter(Immortal):  # round {n}
    def __init__(self) -> None:
        self.count = 0

    @rpc
    def inc(self) -> int:
        self.count += 1
        return self.count
"""


def run(upgrades: int, out_dir: Path) -> list[dict[str, Any]]:

    with tempfile.TemporaryDirectory(prefix="immortals-upgrade-") as tmp:
        place = Path(tmp)
        home, err = place / "home", place / "instances.err"
        app = place / "app0.py"
        app.write_text(APP.format(n=0))
        procs = [immortals(home, "run", f"{app}:Counter", "--name", "counter", err=err)]
        wait_for(err, " serving on ", 1)
        loop = CallingLoop(home, "counter")
        loop.start()
        replies = loop.replies
        rows: list[dict[str, Any]] = []
        try:
            for n in range(1, upgrades + 1):
                time.sleep(0.3)
                app = place / f"app{n}.py"
                app.write_text(APP.format(n=n))
                began = time.monotonic()
                taker = immortals(
                    home, "upgrade", "live", "counter", "--app", f"{app}:Counter", err=err
                )
                procs.append(taker)
                wait_for(err, " serving on ", n + 1)
                time.sleep(0.3)  # replies after the takeover
                window = [t for t, _ in replies if t >= began - 0.05]
                gaps = [b - a for a, b in itertools.pairwise(window)]
                rows.append({"round": n, "pause_ms": max(gaps) * 1000 if gaps else None})
                print(f"upgrade {n}: longest gap {rows[-1]['pause_ms']:.0f} ms", file=sys.stderr)
        finally:
            loop.stop()
            stop_all(procs)
        count = loop.check()
    pauses = [r["pause_ms"] for r in rows if r["pause_ms"] is not None]
    p50 = statistics.median(pauses)
    verdict = "PASS" if p50 < 200 else "MISS"
    render(
        "upgrade_bench",
        f"live upgrade pause over {upgrades} upgrades (goal: p50 under 200 ms)",
        [
            Column("round", "upgrade"),
            Column("pause_ms", "longest gap between replies, ms", "{:.0f}"),
        ],
        [*rows, {"round": "p50", "pause_ms": p50}, {"round": "max", "pause_ms": max(pauses)}],
        out_dir=out_dir,
        notes=[f"{count} replies, exactly 1..N; p50 {p50:.0f} ms: {verdict}"],
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="the pause of a live upgrade")
    parser.add_argument("--upgrades", type=int, default=20, help="upgrades to time (20)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    run(args.upgrades, args.out)


if __name__ == "__main__":
    main()
