"""A/B of the runtime against another commit: the same RPC workloads, in one run, interleaved.

    python -m benchmarks.bench_ab [--against REV] [--reps 3] [--quick]

The commit ``REV`` (default ``HEAD``, i.e. the last commit, against the working tree) is
exported with ``git archive`` into a temporary folder; its instances run its own code, this
tree's run this tree's. Each configuration is measured ``--reps`` times per side, the sides
alternating which goes first, and the table reports medians and the ratio after/before, so a
change to the runtime's hot path is judged on one noisy machine at one moment.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from benchmarks._report import Column, render
from benchmarks.bench_rpc import REPO, ImmortalsPair, Result


def _export(rev: str, into: Path) -> Path:
    """The tree of commit ``rev`` as plain files under ``into``."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev], cwd=REPO, stdout=out, check=True)
    tree = into / "tree"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _configs(quick: bool) -> list[tuple[str, str, int, int, int]]:
    """(durability, shape, size, calls, window) of every measured row."""
    pipelined, pingpong = (2000, 300) if quick else (20000, 2000)
    rows = []
    for durability in ("fsync", "none"):
        for size in (16, 256, 4096):
            rows.append((durability, "pipelined", size, pipelined, 1000))
        rows.append((durability, "ping-pong", 16, pingpong, 1))
    rows.append(("fsync", "outside ping-pong", 16, pingpong, 1))
    return rows


def _measure(pair: ImmortalsPair, shape: str, size: int, n: int, window: int) -> Result:
    if shape == "outside ping-pong":
        return pair.run_outside(n, size)
    return pair.run(n, size, window)


def run(*, against: str, reps: int, quick: bool, out_dir: Path) -> list[dict[str, Any]]:
    console = Console(width=160)
    configs = _configs(quick)
    figures: dict[tuple[Any, ...], dict[str, list[Result]]] = {
        c: {"before": [], "after": []} for c in configs
    }
    with tempfile.TemporaryDirectory(prefix="immortals-ab-") as tmp:
        folder = Path(tmp)
        old_tree = _export(against, folder)
        pairs: dict[tuple[str, str], ImmortalsPair] = {}
        try:
            for side, repo in (("before", old_tree), ("after", REPO)):
                for durability in ("fsync", "none"):
                    place = folder / side
                    place.mkdir(exist_ok=True)
                    pairs[(side, durability)] = ImmortalsPair(place, durability, repo=repo)
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"A/B against {against}", total=reps * len(configs))
                for rep in range(reps):
                    for config in configs:
                        durability, shape, size, n, window = config
                        order = ("before", "after") if rep % 2 == 0 else ("after", "before")
                        for side in order:
                            pair = pairs[(side, durability)]
                            figures[config][side].append(_measure(pair, shape, size, n, window))
                        progress.advance(task)
        finally:
            for pair in pairs.values():
                pair.close()
    rows = []
    for (durability, shape, size, _n, _w), sides in figures.items():
        row: dict[str, Any] = {"durability": durability, "shape": shape, "size": size}
        for side, results in sides.items():
            row[f"{side}_calls_s"] = statistics.median(r.calls / r.seconds for r in results)
            row[f"{side}_cpu_us"] = statistics.median(r.cpu / r.calls * 1e6 for r in results)
            if shape != "pipelined":
                row[f"{side}_p50_us"] = statistics.median(
                    sorted(r.latencies)[len(r.latencies) // 2] * 1e6 for r in results
                )
        row["ratio"] = row["after_calls_s"] / row["before_calls_s"]
        row["cpu_ratio"] = row["after_cpu_us"] / max(row["before_cpu_us"], 1e-9)
        rows.append(row)
    render(
        "ab_rpc",
        f"RPC A/B: working tree (after) against {against} (before), median of {reps}",
        [
            Column("durability", "durability"),
            Column("shape", "shape"),
            Column("size", "bytes", "{:,}"),
            Column("before_calls_s", "before calls/s", "{:,.0f}"),
            Column("after_calls_s", "after calls/s", "{:,.0f}"),
            Column("ratio", "after/before", "{:.2f}"),
            Column("before_p50_us", "before p50 µs", "{:,.0f}"),
            Column("after_p50_us", "after p50 µs", "{:,.0f}"),
            Column("before_cpu_us", "before CPU µs/call", "{:,.1f}"),
            Column("after_cpu_us", "after CPU µs/call", "{:,.1f}"),
            Column("cpu_ratio", "CPU after/before", "{:.2f}"),
        ],
        rows,
        out_dir=out_dir,
        notes=[f"before = {against} (git archive), after = the working tree; {reps} repetitions"],
        console=console,
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="the commit to compare with (HEAD)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per side (3)")
    parser.add_argument("--quick", action="store_true", help="small runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    run(against=args.against, reps=args.reps, quick=args.quick, out_dir=args.out)


if __name__ == "__main__":
    main()
