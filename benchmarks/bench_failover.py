"""Failover on one machine: from SIGKILL of the primary to the first reply served by the
standby that took over, as seen by a client calling in a loop, over repeated failovers.

    python -m benchmarks.bench_failover [--failovers 30]

A primary and one standby of a counter run with default settings; a client thread calls
``inc`` in a loop. Each round SIGKILLs the primary, notes when the client's next reply came
(the standby, now primary, served it), then starts a new standby and waits until it follows the
log. The issue's goals: p50 under 250 ms and p99 under 1 s. The client's replies must be
exactly 1..N. The table and a plot are saved under ``benchmarks/results/`` (``failover_bench``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Column, render
from benchmarks.bench_rpc import REPO

APP = "samples/counter/counter.py:Server"


def _start(home: Path, err: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(err, "ab") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "--home",
                str(home),
                "run",
                APP,
                "--name",
                "server",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
        )


def _wait_for(path: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or text not in path.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no {text!r} in {path} after {timeout:g} s")
        time.sleep(0.005)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(failovers: int, out_dir: Path) -> list[dict[str, Any]]:
    from rich.progress import Progress

    from runtime import connect

    with tempfile.TemporaryDirectory(prefix="immortals-failover-") as tmp:
        place = Path(tmp)
        home = place / "home"
        primary_err = place / "p0.err"
        primary = _start(home, primary_err)
        _wait_for(primary_err, " serving on ")
        standby_err = place / "s1.err"
        standby = _start(home, standby_err, "--standby")
        _wait_for(standby_err, " following ")
        procs = [primary, standby]
        replies: list[tuple[float, int]] = []
        stop = threading.Event()

        def call() -> None:
            with connect(home, timeout=60) as client:
                i = 0
                while not stop.is_set():
                    value = client.call("server", "inc", key=f"c{i}")
                    replies.append((time.monotonic(), value))
                    i += 1

        caller = threading.Thread(target=call)
        caller.start()
        rows: list[dict[str, Any]] = []
        try:
            with Progress(transient=True) as progress:
                task = progress.add_task("failovers", total=failovers)
                for n in range(1, failovers + 1):
                    time.sleep(0.3)
                    killed = time.monotonic()
                    primary.send_signal(signal.SIGKILL)
                    primary.wait(30)
                    _wait_for(standby_err, " serving on ")
                    while not replies or replies[-1][0] <= killed:
                        time.sleep(0.001)
                    first = next(t for t, _ in replies if t > killed)
                    rows.append({"round": n, "failover_ms": (first - killed) * 1000})
                    primary, primary_err = standby, standby_err
                    standby_err = place / f"s{n + 1}.err"
                    standby = _start(home, standby_err, "--standby")
                    procs.append(standby)
                    _wait_for(standby_err, " following ")
                    progress.advance(task)
        finally:
            stop.set()
            caller.join(60)
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)
        values = [v for _, v in replies]
        if values != list(range(1, len(values) + 1)):
            raise SystemExit("bench: the replies were not exactly 1..N: something was lost")
    times = [r["failover_ms"] for r in rows]
    p50, p99 = statistics.median(times), _percentile(times, 0.99)
    verdict = "PASS" if p50 < 250 and p99 < 1000 else "MISS"

    def plot(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axis = plt.subplots(figsize=(7, 3.5))
        axis.plot(sorted(times), [(i + 1) / len(times) for i in range(len(times))], marker=".")
        axis.axvline(250, color="#c33", linestyle="--", label="goal p50 250 ms")
        axis.set_xlabel("SIGKILL to first reply from the new primary, ms")
        axis.set_ylabel("fraction of failovers")
        axis.set_title(f"failover on one machine, {len(times)} failovers")
        axis.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    render(
        "failover_bench",
        f"failover over {failovers} SIGKILLs of the primary (goal: p50 < 250 ms, p99 < 1 s)",
        [
            Column("round", "failover"),
            Column("failover_ms", "SIGKILL to first reply, ms", "{:.0f}"),
        ],
        [
            *rows,
            {"round": "p50", "failover_ms": p50},
            {"round": "p99", "failover_ms": p99},
            {"round": "max", "failover_ms": max(times)},
        ],
        out_dir=out_dir,
        plot=plot,
        notes=[
            f"{len(values)} replies, exactly 1..N; p50 {p50:.0f} ms, p99 {p99:.0f} ms: {verdict}"
        ],
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="failover time with a standby, one machine")
    parser.add_argument("--failovers", type=int, default=30, help="failovers to time (30)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.failovers < 1:
        parser.error("--failovers must be at least 1")
    run(args.failovers, args.out)


if __name__ == "__main__":
    main()
