"""``python -m runtime.sim``: run a range of seeds and print what the simulator found.

    python -m runtime.sim --seeds 2000 [--first 0] [--workload W] [--trace] [--coordinator M:C]
        [--driver M:C]

Prints a table per workload (seeds, crashes, packets lost, duplicated and reordered, torn
appends, checkpoints written, events, standby takeovers, zombie primaries, violations) and, for each failing seed, its violations and the one line that replays it
with a trace. Exit status 1 when any seed failed.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .._coordinator import Coordinator
from ._host import SimNode
from ._run import SeedResult, repro_command, run_seed
from ._workloads import WORKLOADS


def _coordinator(spec: str) -> type[Coordinator]:
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot load coordinator {spec!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Coordinator)):
        raise argparse.ArgumentTypeError(f"{spec} is not a Coordinator subclass")
    return cls


def _driver(spec: str) -> type[SimNode]:
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot load driver {spec!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, SimNode)):
        raise argparse.ArgumentTypeError(f"{spec} is not a SimNode subclass")
    return cls


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.sim", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    p.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--workload", choices=sorted(WORKLOADS), help="one workload (default: by seed)")
    p.add_argument("--trace", action="store_true", help="print every event and action")
    p.add_argument(
        "--coordinator", type=_coordinator, metavar="MODULE:CLASS", help="a coordinator variant"
    )
    p.add_argument(
        "--driver", type=_driver, metavar="MODULE:CLASS", help="a driver (SimNode) variant"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seeds < 1:
        print("python -m runtime.sim: error: --seeds must be at least 1", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    cls = args.coordinator or Coordinator
    variant = f"{cls.__module__}:{cls.__name__}" if args.coordinator else None
    driver = args.driver or SimNode
    driver_variant = f"{driver.__module__}:{driver.__name__}" if args.driver else None
    results: list[SeedResult] = []
    started = time.perf_counter()
    with Progress(console=console, transient=True, disable=args.trace) as progress:
        task = progress.add_task("simulating", total=args.seeds)
        for seed in range(args.first, args.first + args.seeds):
            result = run_seed(
                seed, args.workload, coordinator_cls=cls, driver_cls=driver, keep_trace=args.trace
            )
            results.append(result)
            if args.trace:
                print("\n".join(result.trace))
            progress.advance(task)
    elapsed = time.perf_counter() - started
    Console(width=150).print(_table(results, elapsed))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"seed {r.seed} ({r.workload}; faults: {r.faults}):")
        for violation in r.violations[:5]:
            print(f"  - {violation}")
        print(f"  replay: {repro_command(r.seed, r.workload, variant, driver_variant)}")
    return 1 if failed else 0


def _table(results: list[SeedResult], elapsed: float) -> Table:
    table = Table(title=f"{len(results)} seeds in {elapsed:.1f} s")
    for column in (
        "workload",
        "seeds",
        "crashes",
        "lost",
        "duplicated",
        "reordered",
        "torn",
        "checkpoints",
        "events",
        "takeovers",
        "zombies",
        "violations",
    ):
        table.add_column(column, justify="left" if column == "workload" else "right")
    groups: dict[str, list[SeedResult]] = collections.defaultdict(list)
    for r in results:
        groups[r.workload].append(r)
    rows = sorted(groups.items()) + ([("all", results)] if len(groups) > 1 else [])
    for name, group in rows:
        table.add_row(
            name,
            str(len(group)),
            str(sum(r.crashes for r in group)),
            str(sum(r.dropped for r in group)),
            str(sum(r.duplicated for r in group)),
            str(sum(r.reordered for r in group)),
            str(sum(r.torn for r in group)),
            str(sum(r.checkpoints for r in group)),
            str(sum(r.events for r in group)),
            str(sum(r.takeovers for r in group)),
            str(sum(r.zombies for r in group)),
            str(sum(1 for r in group if not r.ok)),
            end_section=name != "all" and name == rows[-1][0],
        )
    return table


if __name__ == "__main__":
    raise SystemExit(main())
