"""Field-level differences between a recorded step and the same input run by other code.

The replay executor stops at the first difference (``runtime._executor.compare_effects`` raises
``NondeterminismError``); a retroactive test needs every difference, as data. So this module
compares the same record keys, in the same order, and reuses the runtime's rule that an old
failure ``[type, message]`` equals a new ``[type, message, lsn]``; each difference inside a key
is spelled by ``replayer._diff.diff_states`` with the record key in front of its path
(``("rep", 0, 2)``: the value of the first result).

Every difference also gets an *effect kind*, the name ``--allow effect:KIND`` uses: ``out`` is
split into ``calls`` and ``replies`` by the message's own kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replayer._diff import diff_states, format_path
from runtime._executor import EFFECT_KEYS as RECORD_KEYS
from runtime._executor import same_but_error_lsns

# The record keys the runtime compares (in its order), with the effect kind each one is called
# by in --allow rules (``out`` is split per message).
_KIND_OF = {
    "nd": "nd",
    "out": "calls",
    "emit": "emits",
    "rep": "results",
    "tim": "timers",
    "tcx": "cancelled",
    "fx": "side_effects",
}
EFFECT_KEYS: tuple[tuple[str, str], ...] = tuple((key, _KIND_OF[key]) for key, _ in RECORD_KEYS)
KINDS = ("nd", "calls", "replies", "emits", "results", "timers", "cancelled", "side_effects")
EXTRA_KINDS = ("state", "error")  # a migration check's state; code that raised out of a step
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "out": ("calls", "replies"),
    "emit": ("emits",),
    "rep": ("results",),
    "tim": ("timers",),
    "tcx": ("cancelled",),
    "fx": ("side_effects",),
}


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One difference: where (``path``, record key first), of which effect kind, both values.

    ``change`` is ``added`` (only the new code produced it), ``removed`` (only the recorded
    step had it) or ``changed``. ``allowed`` is set by the ``--allow`` rules.
    """

    path: tuple[Any, ...]
    kind: str
    change: str
    expected: Any
    actual: Any
    allowed: bool = False

    @property
    def where(self) -> str:
        """``rep[0][2]``: the path as Python would index the step record (or the state)."""
        head, *rest = self.path
        if head == "state":
            return format_path(tuple(rest))
        return str(head) + "".join(f"[{k!r}]" for k in rest)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": list(self.path),
            "where": self.where,
            "kind": self.kind,
            "change": self.change,
            "expected": self.expected,
            "actual": self.actual,
            "allowed": self.allowed,
        }


def effect_diffs(recorded: dict[str, Any], produced: dict[str, Any]) -> list[FieldDiff]:
    """Every effect of ``produced`` that differs from ``recorded``; empty when they agree."""
    out: list[FieldDiff] = []
    for key, kind in EFFECT_KEYS:
        expected = recorded.get(key, [])
        actual = produced.get(key, [])
        if expected == actual or same_but_error_lsns(key, expected, actual):
            continue
        for change in diff_states(expected, actual):
            path = (key, *change.path)
            out.append(
                FieldDiff(
                    path,
                    _message_kind(path, expected, actual) if key == "out" else kind,
                    change.kind,
                    change.old,
                    change.new,
                )
            )
    return out


def state_diffs(expected: Any, actual: Any) -> list[FieldDiff]:
    """Differences between two app states, as ``("state", ...)`` paths of kind ``state``."""
    return [
        FieldDiff(("state", *c.path), "state", c.kind, c.old, c.new)
        for c in diff_states(expected, actual)
    ]


def _message_kind(path: tuple[Any, ...], expected: list[Any], actual: list[Any]) -> str:
    """``calls`` or ``replies``: what the differing message at ``out[i]`` is."""
    if len(path) > 1 and isinstance(path[1], int):
        for messages in (actual, expected):
            if path[1] < len(messages):
                message = messages[path[1]]
                if isinstance(message, list | tuple) and len(message) > 2:
                    return "calls" if message[2] == "c" else "replies"
    return "calls"
