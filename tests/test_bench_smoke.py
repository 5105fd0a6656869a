"""The log benchmark runs end to end and saves its table and plot (speed is not judged here)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from benchmarks import bench_log


def test_quick_benchmark_writes_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results"
    with open(tmp_path / "console.txt", "w") as sink:
        result = bench_log.run(quick=True, out_dir=out, console=Console(file=sink))
    assert {v["verdict"] for v in result["verdicts"]} <= {"PASS", "MISS"}
    saved = json.loads((out / "log_bench.json").read_text())
    whats = [row["what"] for row in saved["rows"]]
    assert any("4096 records/frame" in w for w in whats)
    assert any("bare 4 KiB" in w for w in whats)
    assert "machine" in saved and saved["machine"]["cores"]
    assert (out / "log_bench.png").stat().st_size > 1000
    assert "| measurement |" in (out / "log_bench.md").read_text()


def test_quick_replay_benchmark_writes_table_json_and_plot(tmp_path: Path) -> None:
    from benchmarks import bench_replay

    out = tmp_path / "results"
    with open(tmp_path / "console.txt", "w") as sink:
        result = bench_replay.run(quick=True, out_dir=out, console=Console(file=sink))
    assert len(result["notes"]) == 4
    assert all(note.startswith(("PASS: ", "MISS: ")) for note in result["notes"])
    saved = json.loads((out / "replay_bench.json").read_text())
    values = {row["measure"]: row["value"] for row in saved["rows"]}
    assert values["replay (verify: read, re-execute, compare)"] > 0
    assert (out / "replay_bench.png").stat().st_size > 1000


def test_quick_debugger_benchmark_writes_table_json_and_plot(tmp_path: Path) -> None:
    from benchmarks import bench_debugger

    out = tmp_path / "results"
    with open(tmp_path / "console.txt", "w") as sink:
        result = bench_debugger.run(quick=True, out_dir=out, console=Console(file=sink))
    assert result["notes"][0].startswith(("PASS: first screen", "MISS: first screen"))
    saved = json.loads((out / "debugger_bench.json").read_text())
    assert len(saved["rows"]) == 6 and all(row["value"] > 0 for row in saved["rows"])
    assert (out / "debugger_bench.png").stat().st_size > 1000


def test_the_failover_upgrade_and_standby_benchmarks_run_and_save_their_tables(
    tmp_path: Path,
) -> None:
    """Small runs of the three process benchmarks: each saves its table (and the failover one
    its plot), and each checks on its own that the replies were exactly 1..N."""
    from benchmarks import bench_failover, bench_standby, bench_upgrade

    rows = bench_failover.run(1, 1, tmp_path)
    assert [r["mode"] for r in rows] == ["lock", "lease only"]
    assert (tmp_path / "failover_bench.md").exists() and (tmp_path / "failover_bench.png").exists()
    assert len(bench_upgrade.run(1, tmp_path)) == 1
    assert (tmp_path / "upgrade_bench.md").exists()
    bench_standby.run(1000, 1, tmp_path)
    assert "standby lag p99" in (tmp_path / "standby_bench.md").read_text()
