"""The background check of a live instance: does its recorded code still reproduce its log?

A handler that reads the real clock, the global ``random`` or a file behaves differently on
replay, and without a check that is found at the next crash, when recovery refuses. So after
each checkpoint the node starts this module in a child process (off the hot path: its own
interpreter, its own GIL) over the steps since the previous checkpoint:

    python -m runtime._history_check LOG_DIR FIRST LAST

It re-executes them from the previous checkpoint's state with the code the log keeps for each
step (``_versions.CodeBook``), writes what it found to ``LOG/history-check.json`` (which
``immortals status`` shows) and, on a divergence, prints one line to stderr (the instance's
stderr, which it inherits) naming the step and what to do. Exit status 0 when the steps
replay, 1 when one does not, 2 when the check itself could not run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

from logformat import LogError, LogReader

from ._errors import ImmortalsError, NondeterminismError
from ._replica import Replica
from ._schema import read_checkpoint
from ._versions import CodeBook

RESULT_NAME: Final = "history-check.json"


def check_history(log_dir: Path, first: int, last: int) -> dict[str, Any]:
    """Re-execute steps ``first..last`` of the log from the state before ``first``."""
    with LogReader(log_dir) as reader:
        book = CodeBook(log_dir, reader.meta)
        book.load_all()
        found = reader.newest_checkpoint(at_or_below=first - 1) if first > 1 else None
        start = found[0] if found is not None else 0  # replay from the nearest state before
        replica = Replica(book.app_at(start + 1), name=reader.meta.instance)
        replica.executor.code_for = book.app_for
        if found is not None:
            replica.restore(read_checkpoint(found[1], where=f"checkpoint at LSN {start}"))
        result: dict[str, Any] = {"first": first, "last": last, "ok": True, "at": time.time()}
        result["app"] = reader.meta.app  # for the command the report names
        try:
            for rec in reader.records(start + 1, last):
                replica.apply(rec.value, rec.lsn)
        except NondeterminismError as exc:
            result.update(ok=False, lsn=exc.lsn, what=exc.what)
    return result


def write_result(log_dir: Path, result: dict[str, Any]) -> None:
    """Replace ``LOG/history-check.json`` atomically (no fsync: it is a report, not the log)."""
    tmp = log_dir / (RESULT_NAME + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, log_dir / RESULT_NAME)


def read_result(log_dir: Path) -> dict[str, Any] | None:
    """The last check's result, None if none ran (or its file does not parse)."""
    try:
        data = json.loads((log_dir / RESULT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str]) -> int:
    log_dir, first, last = Path(argv[0]), int(argv[1]), int(argv[2])
    try:
        result = check_history(log_dir, first, last)
    except (ImmortalsError, LogError, OSError) as exc:
        print(f"{log_dir.name}: the background replay check could not run: {exc}", file=sys.stderr)
        return 2
    write_result(log_dir, result)
    if result["ok"]:
        return 0
    name = log_dir.name
    spec = result["app"]
    print(
        f"{name}: the background replay check found that step {result['lsn']} does not replay "
        f"({result['what']} differ): a handler depends on something the log does not record "
        "(the real clock, the global random, a file). The instance keeps serving and recovers "
        f"from the checkpoint at LSN {result['last']}, past that step. Fix the handler "
        "(self.now(), self.random()) and restart with the fix (an upgrade); if a recovery "
        f"ever has to replay the step, `immortals run {spec} --name {name} "
        f"--accept-divergence` takes it as the code runs it. `immortals replay {name} --verify` "
        "lists every such step",
        file=sys.stderr,
        flush=True,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
