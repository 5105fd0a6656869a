"""Structured differences between two states of an instance (plain data, no I/O).

A person debugging wants "``accounts['bob'].balance`` went from 5 to -3", not two dumps to
compare by eye, so a diff is a list of changes at paths. A path is a tuple of keys and list
indexes from the root of the state; ``format_path`` spells it the way Python would index it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Path = tuple[Any, ...]
ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: ``old`` is None for "added", ``new`` is None for "removed"."""

    kind: ChangeKind
    path: Path
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": list(self.path)}
        if self.kind != "added":
            out["old"] = self.old
        if self.kind != "removed":
            out["new"] = self.new
        return out


def diff_states(old: Any, new: Any) -> list[Change]:
    """Every change from ``old`` to ``new``, in a stable order (dict order, then list index).

    Dicts are compared key by key and lists index by index (a list that grew shows the new
    items as added at their indexes); any other value that differs is one "changed" entry.
    Values of different types are always a change, even if they compare equal (1 vs 1.0 vs
    True): the state really did change type.
    """
    changes: list[Change] = []
    _diff((), old, new, changes)
    return changes


def _diff(path: Path, old: Any, new: Any, out: list[Change]) -> None:
    if type(old) is not type(new):
        out.append(Change("changed", path, old, new))
        return
    if isinstance(old, dict):
        for key, value in old.items():
            if key not in new:
                out.append(Change("removed", (*path, key), value, None))
            else:
                _diff((*path, key), value, new[key], out)
        for key, value in new.items():
            if key not in old:
                out.append(Change("added", (*path, key), None, value))
        return
    if isinstance(old, list):
        common = min(len(old), len(new))
        for i in range(common):
            _diff((*path, i), old[i], new[i], out)
        for i in range(common, len(old)):
            out.append(Change("removed", (*path, i), old[i], None))
        for i in range(common, len(new)):
            out.append(Change("added", (*path, i), None, new[i]))
        return
    if old != new:
        out.append(Change("changed", path, old, new))


def format_path(path: Path) -> str:
    """``('accounts', 'bob', 0)`` as ``accounts['bob'][0]`` (the root is ``state``)."""
    if not path:
        return "state"
    head, *rest = path
    text = head if isinstance(head, str) and head.isidentifier() else f"state[{head!r}]"
    return text + "".join(f"[{key!r}]" for key in rest)
