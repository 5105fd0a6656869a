"""A line tracer for re-executing one step: which lines of the app ran, with which locals.

Only the app's own code is followed: frames from the standard library, installed packages and
immortals itself are skipped, so a trace reads like stepping through the handler in a
debugger. Locals are copied at each line (the objects move on as the handler continues), as
storable plain data where possible and as a short ``repr`` otherwise.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from logformat import pack_value, unpack_value
from runtime._codestore import CODE_FILE_PREFIX

_REPR_LIMIT = 200


@dataclass(frozen=True, slots=True)
class TraceLine:
    """One line about to run: where, in which function, and the locals at that moment."""

    file: str
    line: int
    function: str
    locals: dict[str, Any]
    event: str = "line"  # "line", or "return" (locals then include "<return>")

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "function": self.function,
            "event": self.event,
            "locals": self.locals,
        }


def _skipped_roots() -> tuple[str, ...]:
    here = Path(__file__).resolve().parent
    roots = {str(here), str(here.parent / "runtime"), str(here.parent / "logformat")}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(str(Path(path).resolve()))
    return tuple(sorted(roots))


_SKIPPED = _skipped_roots()
_USER_FILE_CACHE: dict[str, bool] = {}


def is_user_code(filename: str) -> bool:
    """Whether a frame from ``filename`` belongs to the app (traced) or to the machinery."""
    known = _USER_FILE_CACHE.get(filename)
    if known is None:
        if filename.startswith("<"):
            known = filename.startswith(CODE_FILE_PREFIX)  # recorded app code, from the log
        else:
            resolved = str(Path(filename).resolve())
            known = not any(resolved.startswith(root) for root in _SKIPPED)
        _USER_FILE_CACHE[filename] = known
    return known


def snapshot_value(value: Any) -> Any:
    """A detached copy of ``value`` as storable data, or its (short) repr if it is not storable."""
    try:
        return unpack_value(pack_value(value))
    except Exception:
        text = repr(value)
        return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _frame_locals(frame: FrameType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in frame.f_locals.items():
        if name == "self":
            out[name] = f"<{type(value).__name__}>"  # the state is shown on its own
        else:
            out[name] = snapshot_value(value)
    return out


@contextmanager
def tracing(lines: list[TraceLine]) -> Iterator[None]:
    """Record every line of app code run inside the ``with`` block into ``lines``."""

    def local(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if event == "line":
            lines.append(
                TraceLine(
                    frame.f_code.co_filename,
                    frame.f_lineno,
                    frame.f_code.co_name,
                    _frame_locals(frame),
                )
            )
        elif event == "return":
            values = _frame_locals(frame)
            values["<return>"] = snapshot_value(arg)
            lines.append(
                TraceLine(
                    frame.f_code.co_filename,
                    frame.f_lineno,
                    frame.f_code.co_name,
                    values,
                    "return",
                )
            )
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if event == "call" and is_user_code(frame.f_code.co_filename):
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(global_)
    try:
        yield
    finally:
        sys.settrace(previous)
