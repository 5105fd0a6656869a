"""Write the logs of a chain (front calls middle calls back, tests/apps/chain.py) in-process,
fast and deterministically, for the merged debugger's tests, snapshots and benchmark.

Each instance's executor runs live, as a node runs it; the messages each step sends are handed
to their target's executor at once (first in, first out), the way the network would deliver
them, and every step is logged with a wall time from one counter (1 ms a step), so the logs
are the same on every run. ``lost`` sends one more call at the end whose message the middle
never receives: it stays in flight.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from logformat import LogMeta, LogWriter
from runtime._apps import load_app
from runtime._executor import Executor
from runtime._schema import as_input, message_target
from tests.replaylog import fixed_sources

CHAIN = {
    "front": "tests/apps/chain.py:Front",
    "middle": "tests/apps/chain.py:Middle",
    "back": "tests/apps/chain.py:Back",
}
START_NS = 1_764_590_400_000_000_000  # 2025-12-01 12:00:00 UTC


def write_chain(
    folder: Path, rounds: int, *, frame: int = 1, lost: bool = False, step_ns: int = 1_000_000
) -> dict[str, Path]:
    """Logs of ``rounds`` calls ``front.go(n)`` under ``folder/NAME``; their directories."""
    executors: dict[str, Executor] = {}
    writers: dict[str, LogWriter] = {}
    pending: dict[str, list[dict[str, Any]]] = {}
    clock = [START_NS]
    dirs = {name: folder / name for name in CHAIN}
    for name, spec in CHAIN.items():
        loaded = load_app(spec)
        executors[name] = Executor(loaded.cls, name=name, sources=fixed_sources())
        writers[name] = LogWriter.open(
            dirs[name], create=LogMeta(name, spec, loaded.code_version), sync=False
        )
        pending[name] = []
    lsns = dict.fromkeys(CHAIN, 0)
    frames: dict[str, list[int]] = {name: [] for name in CHAIN}  # wall times of pending records

    def flush(name: str) -> None:
        if pending[name]:
            writers[name].append(pending[name], wall_ns=frames[name][-1])
            pending[name] = []
            frames[name] = []

    def step(name: str, inp: dict[str, Any], deliver: bool = True) -> list[Any]:
        lsns[name] += 1
        record = executors[name].execute(inp, lsn=lsns[name])
        clock[0] += step_ns
        pending[name].append(record)
        frames[name].append(clock[0])
        if len(pending[name]) >= frame:
            flush(name)
        return [(name, m) for m in record.get("out", ())] if deliver else []

    try:
        for name in CHAIN:
            step(name, {"k": "start"})
        for n in range(1, rounds + 2 if lost else rounds + 1):
            queue = deque(step("front", {"k": "call", "id": f"go-{n}", "m": "go", "a": [n]}))
            if n > rounds:
                break  # the lost call: the middle never receives it
            while queue:
                sender, message = queue.popleft()
                target = message_target(message)
                queue.extend(step(target, dict(as_input(sender, message))))
    finally:
        for name in CHAIN:
            flush(name)
            writers[name].close()
    return dirs
