"""The RPC benchmark runs every system end to end and saves its table (speed is not judged)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from benchmarks import bench_rpc


def test_every_system_runs_and_the_table_is_saved(tmp_path: Path) -> None:
    out = tmp_path / "results"
    with open(tmp_path / "console.txt", "w") as sink:
        bench_rpc.run(
            quick=True,
            out_dir=out,
            console=Console(file=sink),
            sizes=[16, 256, 4096],
            calls=(300, 30),
            repeat=2,
        )
    saved = json.loads((out / "rpc_bench.json").read_text())
    rows = saved["rows"]
    systems = {r["system"] for r in rows}
    assert {
        "immortals fsync",
        "immortals none",
        "immortals fsync, outside caller",
        "asyncio (no durability)",
        "gRPC unary",
        "gRPC stream",
        "SQLite txn/call",
    } <= systems
    assert all(r["calls_s"] > 0 for r in rows)
    durable = [r for r in rows if r["system"] == "immortals fsync"]
    assert all(r["log_bytes"] > 0 and r["compression"] > 0 for r in durable)
    assert sum("durable ping-pong p50" in note for note in saved["notes"]) == 4
    assert all(r["runs"] == 2 and r["spread"] >= 0 for r in rows)  # medians of the repeats
    assert any(note.startswith("recovery:") and "offline replayer" in note for note in saved["notes"])
    assert sum("recovery" in note and note[:4] in ("PASS", "MISS") for note in saved["notes"]) == 2
    assert (out / "rpc_bench.png").stat().st_size > 1000
