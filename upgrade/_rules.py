"""``--allow`` rules: the differences a team expects, so CI fails only on anything else.

Three forms, given as ``--allow RULE`` (repeatable):

``method:NAME``
    every difference of a step whose input calls method NAME (an outside call, a call from
    another instance, or a timer callback of NAME).
``effect:KIND``
    every difference in one kind of effect: ``calls``, ``replies`` (to instances),
    ``results`` (to outside callers and ``main``), ``emits``, ``timers``, ``cancelled``,
    ``side_effects``, ``nd`` (clock, random seeds, uuids), ``state`` (a ``--check-migration``
    state difference) or ``error`` (the new code raised out of a step); the step record's own
    keys ``out``, ``rep``, ``emit``, ``tim``, ``tcx``, ``fx`` are accepted too.
``path:FIELD.PATH``
    differences at or under a path of the step record (``rep.0.2``: the value of the first
    result; ``out.*.4``: the arguments of any call) or of the state (``state.balance``);
    ``*`` matches any one key or index.

A step whose every difference is allowed counts as *allowed*, not diverged; a step with one
difference no rule allows is diverged (its allowed differences are still shown, marked).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from runtime._errors import ImmortalsError

from ._compare import EXTRA_KINDS, KEY_ALIASES, KINDS, FieldDiff

_ROOTS = ("nd", "out", "emit", "rep", "tim", "tcx", "fx", "state", "error", "*")


class RuleError(ImmortalsError):
    """An ``--allow`` rule that is not ``method:NAME``, ``effect:KIND`` or ``path:FIELD.PATH``."""


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One parsed ``--allow`` rule (see the module docstring)."""

    form: str  # "method", "effect" or "path"
    value: str
    kinds: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.form}:{self.value}"

    def allows(self, diff: FieldDiff, method: str | None) -> bool:
        if self.form == "method":
            return method == self.value
        if self.form == "effect":
            return diff.kind in self.kinds
        if len(self.segments) > len(diff.path):
            return False
        return all(s == "*" or s == str(p) for s, p in zip(self.segments, diff.path, strict=False))


def parse_rule(text: str) -> AllowRule:
    """``method:NAME``, ``effect:KIND`` or ``path:FIELD.PATH``; RuleError naming the problem."""
    form, sep, value = text.partition(":")
    if not sep or not value:
        raise RuleError(f"--allow {text!r}: a rule is method:NAME, effect:KIND or path:FIELD.PATH")
    if form == "method":
        if not value.isidentifier():
            raise RuleError(f"--allow {text!r}: {value!r} is not a method name")
        return AllowRule("method", value)
    if form == "effect":
        kinds = KEY_ALIASES.get(value, (value,))
        if kinds[0] not in KINDS + EXTRA_KINDS:
            known = ", ".join(KINDS + EXTRA_KINDS)
            raise RuleError(f"--allow {text!r}: no effect kind {value!r} (kinds: {known})")
        return AllowRule("effect", value, kinds=kinds)
    if form == "path":
        segments = tuple(value.split("."))
        if "" in segments:
            raise RuleError(f"--allow {text!r}: a path has no empty part (a.b.c)")
        if segments[0] not in _ROOTS:
            roots = ", ".join(_ROOTS)
            raise RuleError(f"--allow {text!r}: a path starts with one of {roots}")
        return AllowRule("path", value, segments=segments)
    raise RuleError(
        f"--allow {text!r}: unknown rule {form!r}; a rule is method:NAME, effect:KIND "
        "or path:FIELD.PATH"
    )


def parse_rules(texts: list[str] | tuple[str, ...] | None) -> list[AllowRule]:
    return [r if isinstance(r, AllowRule) else parse_rule(r) for r in texts or ()]


def mark_allowed(
    diffs: list[FieldDiff], rules: list[AllowRule], method: str | None
) -> tuple[list[FieldDiff], bool]:
    """The diffs with ``allowed`` set, and whether all of them are allowed."""
    marked = [replace(d, allowed=any(r.allows(d, method) for r in rules)) for d in diffs]
    return marked, all(d.allowed for d in marked)


def step_method(inp: dict[str, Any], callbacks: dict[int, list[Any]]) -> str | None:
    """The method a step's input runs: a call's, or a timer callback's (looked up before the
    step runs, since the timer is gone after)."""
    if inp.get("k") == "call":
        method = inp.get("m")
        return method if isinstance(method, str) else None
    if inp.get("k") == "timer":
        callback = callbacks.get(int(inp.get("tid", -1)))
        return str(callback[0]) if callback else None
    return None
