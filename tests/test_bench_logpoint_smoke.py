"""The logpoint benchmark runs end to end and saves its table (speed is not judged here)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from benchmarks import bench_logpoint


def test_quick_logpoint_benchmark_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    with open(tmp_path / "console.txt", "w") as sink:
        result = bench_logpoint.run(quick=True, out_dir=out, console=Console(file=sink))
    assert result["notes"][0].startswith(("PASS: ", "MISS: "))
    saved = json.loads((out / "logpoint_bench.json").read_text())
    rows = {row["measure"]: row for row in saved["rows"]}
    steps = rows["plain replay (Replayer.executed, keep_streams=False)"]["steps"]
    assert rows[f"logpoint, every step ({bench_logpoint.EVERY_STEP})"]["hits"] == steps - 1
    assert rows[f"logpoint, no step ({bench_logpoint.NO_STEP})"]["hits"] == 1  # the start
    assert all(row["rate"] > 0 for row in saved["rows"])
    assert "| measure |" in (out / "logpoint_bench.md").read_text()
