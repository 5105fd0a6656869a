"""What a standby costs the primary, and how far behind it follows, under pipelined load.

    python -m benchmarks.bench_standby [--calls 20000] [--reps 3]

The pipelined RPC benchmark's pair (``rpc_apps.py``: a Driver sends 16-byte calls to a Sink
with 1,000 in flight) runs with the Sink checkpointing every second, without and then with a
standby of the Sink, interleaved, ``--reps`` times; then the same with ``LargeSink``, whose
200,000 records make every checkpoint a pause of its event loop. Reported: the Sink's calls/s
either way (goal: with a standby at least 0.9x of without, and above it, since the standby takes
the checkpoints), and the standby's lag (how long a durable step waited before the standby applied
it, sampled from its reports every 50 ms; goal: p99 under 100 ms). Saved under
``benchmarks/results/`` (``standby_bench``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from benchmarks._report import Column, render
from benchmarks.bench_rpc import REPO, _cpu_seconds, _env
from benchmarks.rpc_apps import LargeSink


def _start(home: Path, app: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "runtime", "--home", str(home), "run"]
    command += [f"benchmarks/rpc_apps.py:{app}", "--name", name, *extra]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), cwd=REPO
    )


def _first_line(proc: subprocess.Popen[bytes], wanted: str) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if wanted not in line:
        raise SystemExit(f"bench: expected {wanted!r}, got {line!r}")


def one_run(calls: int, *, standby: bool, sink: str = "Sink") -> dict[str, Any]:
    """Calls/s of the pipelined pair (``sink``: the Sink's app class), and the standby's
    sampled lags (ms)."""
    from runtime import connect
    from runtime._home import Home

    with tempfile.TemporaryDirectory(prefix="immortals-standby-") as tmp:
        home = Path(tmp) / "home"
        checkpoints = ("--checkpoint-seconds", "1")
        procs = [_start(home, sink, "sink", *checkpoints)]
        _first_line(procs[0], "serving on")
        if standby:
            procs.append(_start(home, sink, "sink", "--standby", *checkpoints))
            _first_line(procs[-1], "following")
        procs.append(_start(home, "Driver", "driver"))
        _first_line(procs[-1], "serving on")
        lags: list[float] = []
        done = threading.Event()

        def sample() -> None:
            registry = Home(home).registry
            while not done.wait(0.05):
                lags.extend(s.lag_ms for s in registry.standbys("sink", fresh_within=1.0))
            registry.close()

        sampler = threading.Thread(target=sample)
        sampler.start()
        names = ["sink", *(["standby"] if standby else []), "driver"]
        try:
            before = [_cpu_seconds(p.pid) for p in procs]
            with connect(home, timeout=600, attempt_timeout=600) as client:
                answer = client.call("driver", "go", calls, 16, 1000)
            used = [_cpu_seconds(p.pid) - b for p, b in zip(procs, before, strict=True)]
        finally:
            done.set()
            sampler.join(10)
            for proc in procs:
                proc.terminate()
                proc.wait(30)
                if proc.stderr is not None:
                    proc.stderr.close()
    seconds = answer["seconds"]
    cores = {name: cpu / seconds for name, cpu in zip(names, used, strict=True)}
    return {"calls_s": calls / seconds, "lags": lags, "cores": cores}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


SINKS = {
    "Sink": "a few bytes of state",
    "LargeSink": f"{LargeSink.RECORDS:,} records of state",
}


def run(calls: int, reps: int, out_dir: Path) -> list[dict[str, Any]]:
    from rich.progress import Progress

    calls_s: dict[tuple[str, bool], list[float]] = {}
    lags: dict[str, list[float]] = {}
    cores: list[dict[str, float]] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("runs", total=2 * reps * len(SINKS))
        for _rep in range(reps):
            for sink in SINKS:
                for standby in (False, True):
                    result = one_run(calls, standby=standby, sink=sink)
                    calls_s.setdefault((sink, standby), []).append(result["calls_s"])
                    if standby:
                        lags.setdefault(sink, []).extend(result["lags"])
                        if sink == "Sink":
                            cores.append(result["cores"])
                    progress.advance(task)
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    for sink, state in SINKS.items():
        base = statistics.median(calls_s[sink, False])
        withs = statistics.median(calls_s[sink, True])
        ratios[sink] = withs / base
        rows += [
            {
                "what": f"{sink} ({state}) calls/s, no standby: it checkpoints",
                "value": f"{base:,.0f}",
            },
            {
                "what": f"{sink} calls/s, one standby: the standby checkpoints",
                "value": f"{withs:,.0f}",
            },
            {
                "what": f"{sink} with / without (goal >= 0.9, and > 1)",
                "value": f"{withs / base:.2f}",
            },
        ]
    for sink, sampled in lags.items():
        rows += [
            {
                "what": f"{sink}: standby lag p50, ms",
                "value": f"{statistics.median(sampled or [0]):.1f}",
            },
            {
                "what": f"{sink}: standby lag p99, ms (goal < 100 for Sink)",
                "value": f"{_p99(sampled):.1f}",
            },
            {"what": f"{sink}: standby lag max, ms", "value": f"{max(sampled or [0]):.1f}"},
        ]
    lag_p99 = _p99(lags["Sink"])
    notes = [
        f"{calls:,} pipelined 16-byte calls per run (1,000 in flight), median of {reps} "
        "interleaved runs each way; every run checkpoints the Sink each second",
        *(
            f"runs, {sink}, {'one standby' if standby else 'no standby'}: "
            + ", ".join(f"{v:,.0f}" for v in values)
            for (sink, standby), values in calls_s.items()
        ),
        f"{sum(len(v) for v in lags.values())} lag samples (each the worst of a standby "
        "report's 250 ms); a LargeSink standby's lag includes the pauses of the checkpoints "
        "it writes",
        "cores busy during the Sink runs with a standby (CPU seconds / wall seconds; the "
        f"machine has {os.cpu_count()}): "
        + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in run.items()) for run in cores),
        *(
            f"{'PASS' if ratio >= 0.9 else 'MISS'} (>= 0.9), "
            f"{'PASS' if ratio > 1 else 'MISS'} (> 1): {sink} with a standby {ratio:.2f}x"
            for sink, ratio in ratios.items()
        ),
        f"{'PASS' if lag_p99 < 100 else 'MISS'}: Sink lag p99 {lag_p99:.1f} ms",
    ]
    render(
        "standby_bench",
        "a standby under pipelined load: the primary's throughput, and the standby's lag",
        [Column("what", "measure"), Column("value", "value")],
        rows,
        out_dir=out_dir,
        notes=notes,
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="a standby's cost and lag under load")
    parser.add_argument("--calls", type=int, default=20000, help="calls per run (20000)")
    parser.add_argument("--reps", type=int, default=3, help="runs each way (3)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.calls < 1000 or args.reps < 1:
        parser.error("--calls must be at least 1000 and --reps at least 1")
    run(args.calls, args.reps, args.out)


if __name__ == "__main__":
    main()
