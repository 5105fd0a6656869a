"""The log's benchmark: append throughput with fsync, compression, random reads, full scans.

    python -m benchmarks.bench_log [--quick] [--out DIR]

Figures are compared in the same run against the machine's bare 4 KiB write+fsync and against
msgpack+zstd encoding alone, so the verdicts are ratios, not absolute numbers on a noisy,
shared machine. The big log for the read figures is built with sync=False (reading does not
depend on how it was made durable).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from benchmarks._report import Column, render
from logformat import FrameEncoder, LogMeta, LogReader, LogWriter

FRAME_SIZES = (1, 16, 256, 4096)


def rpc_records(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """RPC-shaped step records like the runtime writes, payloads of varied size."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choice((16, 16, 64, 256, 1024, 4096))
        payload = "".join(rng.choice("abcdefgh") for _ in range(size // 8)) * 8
        out.append(
            {
                "in": {
                    "k": "call",
                    "from": f"client-{i % 8}",
                    "seq": i,
                    "m": "deposit",
                    "a": [i, payload],
                },
                "nd": [["now", 1.795e9 + i * 0.001]],
                "out": [[f"client-{i % 8}", i, "r", i, True, i * 3]],
            }
        )
    return out


def bare_fsync(folder: Path, rounds: int) -> dict[str, float]:
    path = folder / "fsync.bin"
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    p50 = statistics.median(times)
    return {"p50_us": p50 * 1e6, "ops": 1 / p50}


ALLOCATIONS = ("grows", "posix_fallocate", "zero-filled")


def fdatasync_by_allocation(folder: Path, rounds: int, frame: int = 200) -> dict[str, float]:
    """p50 of write(``frame`` bytes) + fdatasync at the end of a file that grows with each write,
    that was extended with posix_fallocate, or that was filled with zeros and fsynced once.

    Interleaved (one write to each file per round, in a shuffled order) so the machine's noise
    hits the three alike. This is the measurement behind preallocated segments (FORMAT.md 3.1).
    """
    rng = random.Random(5)
    data = os.urandom(frame)
    size = 8 << 20
    fds: dict[str, int] = {}
    paths = {kind: folder / f"alloc-{i}.bin" for i, kind in enumerate(ALLOCATIONS)}
    times: dict[str, list[float]] = {kind: [] for kind in ALLOCATIONS}
    try:
        for kind, path in paths.items():
            fd = fds[kind] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            if kind == "posix_fallocate":
                os.posix_fallocate(fd, 0, size)
            elif kind == "zero-filled":
                zeros = bytes(1 << 20)
                for at in range(0, size, len(zeros)):
                    os.pwrite(fd, zeros, at)
            os.fsync(fd)
        order = list(ALLOCATIONS)
        for n in range(rounds):
            rng.shuffle(order)
            for kind in order:
                t = time.perf_counter()
                os.pwrite(fds[kind], data, n * frame)
                os.fdatasync(fds[kind])
                times[kind].append(time.perf_counter() - t)
    finally:
        for fd in fds.values():
            os.close(fd)
        for path in paths.values():
            path.unlink(missing_ok=True)
    return {kind: statistics.median(t) * 1e6 for kind, t in times.items()}


def append_rate(
    folder: Path, records: list[dict[str, Any]], per_frame: int, appends: int
) -> dict[str, Any]:
    log = folder / f"append-{per_frame}"
    batches = [records[(i * per_frame) % len(records) :][:per_frame] for i in range(appends)]
    batches = [b if len(b) == per_frame else records[:per_frame] for b in batches]
    raw_bytes = sum(len(FrameEncoder().pack_records(b)) for b in batches[:20]) / min(
        20, len(batches)
    )
    times = []
    with LogWriter.open(log, create=LogMeta("bench", "bench:App", "1"), sync=True) as writer:
        start = time.perf_counter()
        for batch in batches:
            t = time.perf_counter()
            writer.append(batch)
            times.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    with LogReader(log) as reader:
        stats = reader.stats()
    shutil.rmtree(log)
    n = appends * per_frame
    return {
        "per_frame": per_frame,
        "records_s": n / elapsed,
        "mb_s": raw_bytes * appends / elapsed / 1e6,
        "appends_s": appends / elapsed,
        "p50_us": statistics.median(times) * 1e6,
        "ratio": stats.compression_ratio,
    }


def encode_only_rate(records: list[dict[str, Any]], per_frame: int, rounds: int) -> float:
    """Records/s that FrameEncoder (msgpack + zstd level 1, the writer's own encoder) reaches."""
    encoder = FrameEncoder()
    batch = records[:per_frame]
    start = time.perf_counter()
    for _ in range(rounds):
        raw = encoder.pack_records(batch)
        encoder.encode(raw, first_lsn=1, record_count=len(batch), epoch=1, wall_ns=0)
    return rounds * per_frame / (time.perf_counter() - start)


def build_big_log(folder: Path, n: int, per_frame: int = 128) -> Path:
    log = folder / "big"
    records = rpc_records(4096, seed=2)
    with LogWriter.open(log, create=LogMeta("bench", "bench:App", "1"), sync=False) as writer:
        for start in range(0, n, per_frame):
            writer.append(
                [records[(start + j) % len(records)] for j in range(min(per_frame, n - start))]
            )
    return log


def read_figures(log: Path, n: int, samples: int) -> dict[str, float]:
    rng = random.Random(3)
    t = time.perf_counter()
    reader = LogReader(log)
    open_s = time.perf_counter() - t
    lsns = [rng.randint(1, n) for _ in range(samples)]
    times = []
    for lsn in lsns:
        t = time.perf_counter()
        reader.read(lsn)
        times.append(time.perf_counter() - t)
    times.sort()
    t = time.perf_counter()
    count = sum(1 for _ in reader.records())
    scan_s = time.perf_counter() - t
    reader.close()
    shutil.rmtree(log / "index")
    t = time.perf_counter()
    LogReader(log).close()
    rebuild_s = time.perf_counter() - t
    return {
        "read_p50_us": times[len(times) // 2] * 1e6,
        "read_p99_us": times[int(len(times) * 0.99)] * 1e6,
        "scan_records_s": count / scan_s,
        "open_s": open_s,
        "rebuild_s": rebuild_s,
    }


def run(*, quick: bool, out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    big_n = 100_000 if quick else 1_000_000
    appends = (
        {1: 300, 16: 300, 256: 100, 4096: 12} if not quick else {1: 60, 16: 60, 256: 20, 4096: 4}
    )
    folder = Path(
        tempfile.mkdtemp(
            prefix="immortals-bench-", dir=out_dir.parent if out_dir.parent.exists() else None
        )
    )
    records = rpc_records(8192)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("log benchmark", total=5 + len(FRAME_SIZES))
            fsync = bare_fsync(folder, 300 if not quick else 60)
            progress.advance(task)
            allocation = fdatasync_by_allocation(folder, 1000 if not quick else 200)
            progress.advance(task)
            rows = []
            for per_frame in FRAME_SIZES:
                rows.append(append_rate(folder, records, per_frame, appends[per_frame]))
                progress.advance(task)
            encode = encode_only_rate(records, 4096, 20 if not quick else 4)
            progress.advance(task)
            log = build_big_log(folder, big_n)
            progress.advance(task)
            reads = read_figures(log, big_n, 5000 if not quick else 1000)
            progress.advance(task)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    one = rows[0]
    biggest = rows[-1]
    goals = [
        (
            "1-record append p50 / bare 4 KiB write+fsync p50",
            one["p50_us"] / fsync["p50_us"],
            "<= 1.5",
        ),
        (
            "append rate at 4096/frame / msgpack+zstd encode rate",
            biggest["records_s"] / encode,
            ">= 0.5",
        ),
        ("random read p50 (us)", reads["read_p50_us"], "< 200"),
    ]
    verdicts = [
        {
            "goal": name,
            "value": value,
            "target": target,
            "verdict": "PASS" if _meets(value, target) else "MISS",
        }
        for name, value, target in goals
    ]
    table_rows = [
        {
            "what": f"append, {r['per_frame']} records/frame, fsync",
            "records_s": r["records_s"],
            "mb_s": r["mb_s"],
            "p50_us": r["p50_us"],
            "ratio": r["ratio"],
        }
        for r in rows
    ]
    table_rows.append(
        {
            "what": "bare 4 KiB write + fdatasync",
            "records_s": fsync["ops"],
            "p50_us": fsync["p50_us"],
        }
    )
    for kind, p50 in allocation.items():
        table_rows.append(
            {"what": f"200 B write + fdatasync, file {kind}", "records_s": 1e6 / p50, "p50_us": p50}
        )
    table_rows.append({"what": "msgpack+zstd encode only, 4096/frame", "records_s": encode})
    table_rows.append(
        {
            "what": f"random read(lsn), {big_n:,}-record log",
            "p50_us": reads["read_p50_us"],
            "p99_us": reads["read_p99_us"],
        }
    )
    table_rows.append(
        {"what": f"full scan, {big_n:,} records", "records_s": reads["scan_records_s"]}
    )
    table_rows.append(
        {"what": f"open a {big_n:,}-record log (index present)", "p50_us": reads["open_s"] * 1e6}
    )
    table_rows.append(
        {"what": "rebuild the index from the segments", "p50_us": reads["rebuild_s"] * 1e6}
    )
    notes = [
        f"{v['verdict']}: {v['goal']} = {v['value']:.2f} (target {v['target']})" for v in verdicts
    ]
    notes.append(
        "fdatasync by allocation (interleaved): posix_fallocate "
        f"{allocation['posix_fallocate'] / allocation['grows']:.2f}x, zero-filled "
        f"{allocation['zero-filled'] / allocation['grows']:.2f}x the growing file's p50; synced "
        "writers preallocate segments with posix_fallocate (FORMAT.md 3.1)"
    )

    def plot(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        left.plot(
            [r["per_frame"] for r in rows],
            [r["records_s"] for r in rows],
            "o-",
            label="append with fsync",
        )
        left.axhline(fsync["ops"], color="grey", linestyle="--", label="bare 4 KiB fsync (ops/s)")
        left.axhline(encode, color="green", linestyle=":", label="msgpack+zstd encode only")
        left.set(
            xscale="log",
            yscale="log",
            xlabel="records per frame",
            ylabel="records/s",
            title="Append throughput",
        )
        left.legend()
        right.bar(["read p50", "read p99"], [reads["read_p50_us"], reads["read_p99_us"]])
        right.axhline(200, color="red", linestyle="--", label="goal: p50 < 200 us")
        right.set(ylabel="microseconds", title=f"Random read, {big_n:,} records")
        right.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    render(
        "log_bench",
        "logformat benchmark" + (" (quick)" if quick else ""),
        [
            Column("what", "measurement"),
            Column("records_s", "records/s", "{:,.0f}"),
            Column("mb_s", "MB/s", "{:.1f}"),
            Column("p50_us", "p50 µs", "{:,.0f}"),
            Column("p99_us", "p99 µs", "{:,.0f}"),
            Column("ratio", "compression", "{:.2f}x"),
        ],
        table_rows,
        out_dir=out_dir,
        notes=notes,
        plot=plot,
        console=console,
    )
    return {"rows": table_rows, "verdicts": verdicts}


def _meets(value: float, target: str) -> bool:
    op, number = target.split()
    limit = float(number)
    return {"<=": value <= limit, ">=": value >= limit, "<": value < limit, ">": value > limit}[op]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    run(quick=args.quick, out_dir=args.out)


if __name__ == "__main__":
    main()
