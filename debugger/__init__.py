"""The time-travel debugger: a Textual TUI over an instance's whole history.

    immortals debug server            # or: python -m runtime debug .immortals/logs/server

From Python (tests, scripts): ``DebuggerApp(log_dir).run()``, or ``run_test()`` with a Pilot.
It reads through ``replayer`` and ``logformat`` only; see docs/ARCHITECTURE.md. Names load
lazily, so ``immortals`` commands other than ``debug`` do not pay for importing Textual.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DebuggerApp": "._app",
    "Breakpoint": "._history",
    "History": "._history",
    "Row": "._history",
    "StepView": "._history",
    "Watch": "._history",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'debugger' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
