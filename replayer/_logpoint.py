"""Logpoints: prints added to the past. A file, a line and an expression, evaluated at every
time that line ran in an instance's history, as if a print had always been there.

    with LogpointRun(".immortals/logs/server", ["counter.py:16 self.count * 2"]) as run:
        for hit in run.hits(progress=lambda done, total: ...):
            print(hit.lsn, hit.text)

How: the history is re-executed (``Replayer.executed``, the replayer's own stepping) with a
copy of each code version's sources compiled so that, before the statement that begins on the
logpoint's line, the expression is evaluated and handed to this module::

    try:
        __immortals_logpoint__(0, self.count * 2)
    except Exception:
        __immortals_logpoint_failed__(0)

That is the print statement inserted there, with the print replaced by a call that keeps the
value; the expression sees the frame's globals and locals exactly as the print would, and an
exception in it is kept as the value (the step goes on). Lines with no logpoint run the
original code, so a logpoint costs nothing where it does not hit. The code each step ran is the
log's (``runtime._versions.CodeBook``): each version's module files are matched against the
logpoint's file when that version is compiled, and a version in which the line has no code is
noted once (``LogpointRun.notes``). Nothing is written: not the log, not the app's files.

Rejected: ``sys.settrace`` (the tracer the debugger uses for one step): a Python call for every
frame and every line of app code, about five times slower than the replay itself
(``benchmarks/bench_logpoint.py`` measures both); and swapping the ``__code__`` of loaded
functions (shared with every other replayer of the process, and unusable once closures change).
See docs/ARCHITECTURE.md, "Logpoints".
"""

from __future__ import annotations

import ast
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from runtime._errors import NondeterminismError
from runtime._home import DEFAULT_HOME

from ._replayer import Replayer, ReplayError
from ._trace import snapshot_value

HIT: Final = "__immortals_logpoint__"
FAILED: Final = "__immortals_logpoint_failed__"
_PLAIN: Final = (int, float, str, bool, type(None))  # values that need no detached copy
Progress = Callable[[int, int], None]
"""A progress callback: ``(steps done, steps in all)``."""


class LogpointError(ReplayError):
    """A logpoint that cannot run: a malformed spec, an expression that is not valid Python or
    would change the step, a file that is not the app's, a line with no code in any version.
    The message says what to give instead."""


@dataclass(frozen=True, slots=True)
class Logpoint:
    """An expression to evaluate just before line ``line`` of ``file`` runs.

    ``file`` is matched against the paths of the app's module files as the log keeps them
    (relative to the app's folder): ``counter.py``, ``pkg/util.py``, or a longer path ending in
    one of them."""

    file: str
    line: int
    expression: str

    def __post_init__(self) -> None:
        if self.line < 1:
            raise LogpointError(f"{self}: a line number is 1 or more")
        _check_expression(self)

    @classmethod
    def parse(cls, spec: str) -> Logpoint:
        """``FILE:LINE:EXPR`` or ``FILE:LINE EXPR`` (the expression may hold colons)."""
        head, sep, expression = spec.partition(" ")
        file, colon, line = head.rpartition(":")
        if not sep or not colon or not line.isdigit():
            file, colon, rest = spec.partition(":")
            line, colon2, expression = rest.partition(":")
            if not colon or not colon2 or not line.strip().isdigit():
                raise LogpointError(
                    f"logpoint {spec!r} is not FILE:LINE:EXPR (say counter.py:12:self.count)"
                )
        if not file or not expression.strip():
            raise LogpointError(
                f"logpoint {spec!r} needs a file, a line and an expression "
                "(say counter.py:12:self.count)"
            )
        return cls(file, int(line), expression.strip())

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.expression}"


class Hit(NamedTuple):
    """One time a logpoint's line ran: in step ``lsn`` (its ``nth`` time in that step, from 0),
    with the expression's value then.

    ``value`` is a detached copy as plain data (a short ``repr`` for what is not storable);
    ``text`` is what ``print`` would have printed (``str`` of the value); when the expression
    raised, ``error`` is ``"Type: message"``, ``value`` is None and ``text`` is ``<error ...>``.
    ``logpoint`` is the logpoint's index in the run's list. A named tuple: a pass can make a
    million of them, and a frozen dataclass took a microsecond each."""

    logpoint: int
    lsn: int
    nth: int
    wall_ns: int
    value: Any
    text: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "logpoint": self.logpoint,
            "lsn": self.lsn,
            "nth": self.nth,
            "wall_ns": self.wall_ns,
            "value": self.value,
            "text": self.text,
            "error": self.error,
        }


@dataclass(slots=True)
class _Placement:
    """What compiling one code version found for one logpoint: the module paths its file
    matched, and for each, where the evaluation went (None) or why the line has no code."""

    matched: dict[str, str | None] = field(default_factory=dict)


class LogpointRun:
    """Logpoints over one instance's history (``from_lsn..to_lsn``, default all of it).

    Opening it loads and compiles every code version the log lists and checks each logpoint
    against them: a ``LogpointError`` if a logpoint can hit in no version, a line in ``notes``
    for each version in which it cannot. :meth:`hits` then re-executes the range once for all
    logpoints. :meth:`cancel` may be called from another thread (a UI's): :meth:`hits` stops
    at its next progress point and ``cancelled`` is then true. ``app``, ``home`` and ``allow_pickle`` are
    the :class:`Replayer`'s."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        logpoints: Sequence[Logpoint | str],
        *,
        app: str | None = None,
        home: str | os.PathLike[str] = DEFAULT_HOME,
        from_lsn: int | None = None,
        to_lsn: int | None = None,
        allow_pickle: bool = False,
    ) -> None:
        self.logpoints = [
            lp if isinstance(lp, Logpoint) else Logpoint.parse(lp) for lp in logpoints
        ]
        if not self.logpoints:
            raise LogpointError("no logpoint given")
        self._placements: dict[str, list[_Placement]] = {}
        self._module_paths: set[str] = set()  # of every version, for an error naming them
        self._buffer: list[tuple[int, Any, str, str | None]] = []
        self._cancel = threading.Event()
        self.replayer = Replayer(
            source,
            app=app,
            home=home,
            allow_pickle=allow_pickle,
            snapshot_every=1 << 62,  # one pass, start to end: snapshots would only cost,
            keep_streams=False,  # and only they read the exactly-once bookkeeping
            compile_module=self._compile,
        )
        try:
            code = self.replayer.code
            for version in self._versions():
                code.app_for(version)  # compiles it (and places the logpoints) if not yet
            self.first_lsn, self.last_lsn = self._range(from_lsn, to_lsn)
            self.notes = self._check() + list(code.fallbacks)
        except BaseException:
            self.replayer.close()
            raise

    @property
    def total(self) -> int:
        """The number of steps :meth:`hits` re-executes."""
        return self.last_lsn - self.first_lsn + 1

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop :meth:`hits` at its next progress point (safe from any thread)."""
        self._cancel.set()

    def close(self) -> None:
        self.replayer.close()

    def __enter__(self) -> LogpointRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pass ---------------------------------------------------------------------------------

    def hits(self, *, progress: Progress | None = None, every: int = 4096) -> Iterator[Hit]:
        """Re-execute the range and yield every hit, in the order the lines ran.

        ``progress(done, total)`` is called every ``every`` steps and once at the end. Stop
        iterating (or :meth:`cancel`) to stop the replay early. A step that re-executes
        differently with the logpoints in raises ``LogpointError`` (an expression with an
        effect: a call, a clock reading, a change of state; or a log the code no longer
        reproduces, which ``immortals replay --verify`` tells apart)."""
        if every < 1:
            raise ValueError(f"every must be 1 or more, not {every}")
        replayer, buffer, total = self.replayer, self._buffer, self.total
        replayer.state_at(self.first_lsn - 1)  # stand before the range (its hits do not count)
        buffer.clear()
        done = 0
        steps = replayer.executed(self.first_lsn, self.last_lsn)
        try:
            for record, _produced in steps:
                done += 1
                if buffer:
                    if len(buffer) == 1:  # the usual case: the line ran once in this step
                        index, value, text, error = buffer.pop()
                        yield Hit(index, record.lsn, 0, record.wall_ns, value, text, error)
                    else:
                        yield from self._drain(record.lsn, record.wall_ns)
                if done % every == 0:
                    if self._cancel.is_set():
                        return
                    if progress is not None:
                        progress(done, total)
        except NondeterminismError as exc:
            raise LogpointError(
                f"step {exc.lsn} re-executes differently with the logpoints in ({exc.what}): "
                "an expression must only read (no calls, clock, randomness or assignments); "
                "if `immortals replay PATH --verify` fails too, the code does not reproduce "
                "this log at all"
            ) from exc
        finally:
            steps.close()
            buffer.clear()
        if progress is not None:
            progress(done, total)

    def _drain(self, lsn: int, wall_ns: int) -> list[Hit]:
        """The step's hits, numbered per logpoint; the buffer emptied for the next step."""
        counts: dict[int, int] = {}
        hits = []
        for index, value, text, error in self._buffer:
            nth = counts.get(index, 0)
            counts[index] = nth + 1
            hits.append(Hit(index, lsn, nth, wall_ns, value, text, error))
        self._buffer.clear()
        return hits

    def _hit(self, index: int, value: Any) -> None:
        """Called by the compiled code with a logpoint's value (inside the handler's sandbox:
        no I/O here). A value that cannot be shown raises into the inserted ``except``."""
        text = str(value)
        copy = value if type(value) in _PLAIN else snapshot_value(value)
        self._buffer.append((index, copy, text, None))

    def _failed(self, index: int) -> None:
        """Called by the compiled code when a logpoint's expression raised."""
        exc = sys.exc_info()[1]
        error = f"{type(exc).__name__}: {exc}"
        self._buffer.append((index, None, f"<error {error}>", error))

    # -- compiling --------------------------------------------------------------------------------

    def _compile(
        self, source: str, filename: str, *, version: str, path: str, namespace: dict[str, Any]
    ) -> types.CodeType:
        """The ``ModuleCompiler`` every code version's modules are compiled with."""
        placements = self._placements.setdefault(version, [_Placement() for _ in self.logpoints])
        self._module_paths.add(path)
        wanted = [i for i, lp in enumerate(self.logpoints) if _same_file(lp.file, path)]
        if not wanted:
            return compile(source, filename, "exec")
        tree = ast.parse(source, filename)
        for index in reversed(wanted):  # each goes first on its line: so they run in order
            logpoint = self.logpoints[index]
            placements[index].matched[path] = _insert(tree, index, logpoint)
        namespace[HIT] = self._hit
        namespace[FAILED] = self._failed
        return compile(ast.fix_missing_locations(tree), filename, "exec")

    def _versions(self) -> list[str]:
        meta = self.replayer.code.meta
        return list(dict.fromkeys([e.code_version for e in meta.versions] + [meta.code_version]))

    def _range(self, from_lsn: int | None, to_lsn: int | None) -> tuple[int, int]:
        r = self.replayer
        first = r.first_lsn if from_lsn is None else from_lsn
        last = r.last_lsn if to_lsn is None else to_lsn
        if not r.first_lsn <= first <= last <= r.last_lsn:
            raise LogpointError(
                f"steps {first}..{last} are not a range of the log of {r.instance!r}, which "
                f"holds steps {r.first_lsn}..{r.last_lsn}"
            )
        return first, last

    def _steps_of(self, version: str) -> str:
        """The steps a code version ran, for people: ``steps 4..9``."""
        entries = self.replayer.code.meta.versions
        for i, entry in enumerate(entries):
            if entry.code_version == version:
                end = entries[i + 1].from_lsn - 1 if i + 1 < len(entries) else self.last_lsn
                return f"steps {entry.from_lsn}..{end}"
        return "its steps"

    def _check(self) -> list[str]:
        """Raise if a logpoint can hit in no code version; a note per version it cannot."""
        notes: list[str] = []
        for index, logpoint in enumerate(self.logpoints):
            usable, why = [], []
            for version, placements in self._placements.items():
                matched = placements[index].matched
                if len(matched) > 1:
                    raise LogpointError(
                        f"logpoint {logpoint}: {logpoint.file!r} names several files of the "
                        f"app ({', '.join(sorted(matched))}): give more of its path"
                    )
                where = f"code version {version} ({self._steps_of(version)})"
                if not matched:
                    why.append(f"{logpoint.file} is not a file of {where}")
                    continue
                reason = next(iter(matched.values()))
                if reason is None:
                    usable.append(version)
                else:
                    why.append(f"{reason} in {where}")
            if not usable:
                if not any(placements[index].matched for placements in self._placements.values()):
                    known = ", ".join(sorted(self._module_paths)) or "none found"
                    raise LogpointError(
                        f"logpoint {logpoint}: {logpoint.file!r} is not a file of the app "
                        f"(its files: {known})"
                    )
                raise LogpointError(f"logpoint {logpoint}: {'; '.join(why)}")
            notes += [f"logpoint {logpoint}: {w}: no hits there" for w in why]
        return notes


class HitTable:
    """A pass's hits by step, filled as it runs (a worker thread: :meth:`fill`) and read
    meanwhile (a UI thread): a timeline column per logpoint (:meth:`cell`) and a step's pane
    (:meth:`at`). ``done`` and ``total`` are the pass's progress in steps."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self._steps: dict[int, list[Hit]] = {}

    def fill(self, run: LogpointRun, *, every: int = 4096) -> None:
        """Run ``run``'s pass to its end (or its :meth:`~LogpointRun.cancel`), keeping every
        hit."""
        self.total = run.total
        for hit in run.hits(progress=self._progress, every=every):
            self.add(hit)

    def add(self, hit: Hit) -> None:
        hits = self._steps.get(hit.lsn)
        if hits is None:
            self._steps[hit.lsn] = [hit]  # one assignment: a reader sees the step or not
        else:
            hits.append(hit)

    def at(self, lsn: int) -> list[Hit]:
        """The hits of step ``lsn``, in the order they ran (a copy)."""
        return list(self._steps.get(lsn, ()))

    def cell(self, lsn: int, logpoint: int) -> str:
        """What logpoint number ``logpoint`` showed in step ``lsn``: its text, the texts
        joined by `` | `` when the line ran several times, "" when it did not run."""
        return " | ".join(h.text for h in self.at(lsn) if h.logpoint == logpoint)

    def __len__(self) -> int:
        return sum(len(hits) for hits in list(self._steps.values()))

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total


def by_step(hits: Sequence[Hit]) -> dict[int, list[Hit]]:
    """Hits grouped by step (LSN), in the order they ran: what a step's pane shows."""
    grouped: dict[int, list[Hit]] = {}
    for hit in hits:
        grouped.setdefault(hit.lsn, []).append(hit)
    return grouped


# -- the transform ------------------------------------------------------------------------------


def _check_expression(logpoint: Logpoint) -> None:
    try:
        tree = ast.parse(logpoint.expression, mode="eval")
    except SyntaxError as exc:
        raise LogpointError(
            f"logpoint {logpoint}: the expression is not valid Python ({exc.msg}): "
            "give one expression, as you would to print()"
        ) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.NamedExpr | ast.Yield | ast.YieldFrom | ast.Await):
            raise LogpointError(
                f"logpoint {logpoint}: the expression must only read "
                f"(no {type(node).__name__}): it runs inside the recorded step"
            )


def _same_file(wanted: str, path: str) -> bool:
    """Whether a logpoint's ``wanted`` file names the module at ``path`` (a path in the
    bundle): the same path, or one ends with the other at a folder boundary."""
    wanted = wanted.replace("\\", "/").removeprefix("./")
    return wanted == path or wanted.endswith("/" + path) or path.endswith("/" + wanted)


_BODIES: Final = ("body", "orelse", "finalbody")


def _insert(tree: ast.Module, index: int, logpoint: Logpoint) -> str | None:
    """Insert the evaluation of ``logpoint`` before the statement that begins on its line;
    None when done, else why the line has no place for it."""
    found = _locate(tree.body, logpoint.line, in_function=False)
    if isinstance(found, str):
        return found
    body, at = found
    body.insert(at, _evaluation(index, logpoint))
    return None


def _locate(
    body: list[ast.stmt], line: int, *, in_function: bool
) -> tuple[list[ast.stmt], int] | str:
    """Where the statement beginning on ``line`` is (its list and index), innermost first;
    or why there is none. An ``except`` or ``case`` line places it first in that clause."""
    for at, node in enumerate(body):
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])
        if not start <= line <= (node.end_lineno or node.lineno):
            continue
        if line <= node.lineno:
            defines = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            if isinstance(node, defines) and not in_function:  # (one in a handler runs there)
                return (
                    f"line {line} defines {node.name}: it runs when the code loads, not in a "
                    "step; put the logpoint on a line of its body"
                )
            if not in_function:
                return f"line {line} runs when the module loads, not in a step"
            if at == 0 and _is_docstring(node):
                return f"line {line} is a docstring"
            return body, at
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        bodies = _child_bodies(node)
        for child in bodies:
            if child[0].lineno <= line <= (child[-1].end_lineno or line):
                return _locate(child, line, in_function=inside)
        for clause in [*getattr(node, "handlers", ()), *getattr(node, "cases", ())]:
            clause_line = getattr(clause, "lineno", None) or clause.pattern.lineno
            if clause_line == line and inside:
                return clause.body, 0
        if not bodies or line < bodies[0][0].lineno:
            return (
                f"line {line} continues the statement that begins at line {node.lineno}: "
                f"put the logpoint on line {node.lineno}"
            )
        return f"line {line} has no code (a blank line, a comment, an else: or a finally:)"
    return f"line {line} has no code (a blank line, a comment, or past the end of the file)"


def _child_bodies(node: ast.stmt) -> list[list[ast.stmt]]:
    bodies = [
        getattr(node, name) for name in _BODIES if isinstance(getattr(node, name, None), list)
    ]
    bodies += [handler.body for handler in getattr(node, "handlers", ())]
    bodies += [case.body for case in getattr(node, "cases", ())]
    return sorted((b for b in bodies if b), key=lambda b: b[0].lineno)


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _evaluation(index: int, logpoint: Logpoint) -> ast.stmt:
    """``try: HIT(index, EXPR)`` / ``except Exception: FAILED(index)``, on the logpoint's line."""
    expression = ast.parse(logpoint.expression, mode="eval").body
    call = ast.Call(ast.Name(HIT, ast.Load()), [ast.Constant(index), expression], [])
    failed = ast.Call(ast.Name(FAILED, ast.Load()), [ast.Constant(index)], [])
    statement = ast.Try(
        body=[ast.Expr(call)],
        handlers=[ast.ExceptHandler(ast.Name("Exception", ast.Load()), None, [ast.Expr(failed)])],
        orelse=[],
        finalbody=[],
    )
    for node in ast.walk(statement):
        if isinstance(node, ast.expr | ast.stmt | ast.excepthandler):
            node.lineno = node.end_lineno = logpoint.line
            node.col_offset = node.end_col_offset = 0
    return statement
