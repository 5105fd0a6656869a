"""Tables and plots for benchmarks: one rich table on the terminal, and the same figures saved.

Every benchmark produces rows (dicts) and a list of columns; this module prints them, writes
``NAME.md`` (with machine facts), ``NAME.json`` (raw figures) and, given a plot function,
``NAME.png``. Kept generic so the runtime's benchmarks reuse it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    fmt: str = "{}"

    def show(self, row: dict[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            return "-"
        try:
            return self.fmt.format(value)
        except (ValueError, TypeError):
            return str(value)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def render(
    name: str,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    *,
    out_dir: Path,
    notes: Sequence[str] = (),
    plot: Callable[[Path], None] | None = None,
    console: Console | None = None,
) -> dict[str, Path]:
    """Print the table; save .md, .json and (with ``plot``) .png under ``out_dir``."""
    console = console or Console()
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col.title, justify="right" if col.fmt != "{}" else "left")
    for row in rows:
        table.add_row(*(col.show(row) for col in columns))
    console.print(table)
    for note in notes:
        console.print(note)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = machine()
    md = [f"# {title}", "", ", ".join(f"{k}: {v}" for k, v in facts.items()), ""]
    md.append("| " + " | ".join(c.title for c in columns) + " |")
    md.append("|" + "---|" * len(columns))
    md.extend("| " + " | ".join(c.show(r) for c in columns) + " |" for r in rows)
    md.extend(["", *notes])
    paths = {"md": out_dir / f"{name}.md", "json": out_dir / f"{name}.json"}
    paths["md"].write_text("\n".join(md) + "\n")
    paths["json"].write_text(
        json.dumps(
            {"title": title, "machine": facts, "rows": list(rows), "notes": list(notes)}, indent=2
        )
    )
    if plot is not None:
        paths["png"] = out_dir / f"{name}.png"
        plot(paths["png"])
    return paths
