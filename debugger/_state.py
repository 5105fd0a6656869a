"""The state pane: the instance's state after the selected step, as an expandable tree.

What the step changed is highlighted (and its ancestors are expanded so it shows); the diff
toggle lists the changes themselves, against the previous step or against the marked step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from replayer import Change, format_path

_CHANGED = "bold #e5c07b"
_ADDED = "bold #98c379"
_REMOVED = "bold #e06c75"
_MAX_CHILDREN = 200  # a huge list shows its first items and a count


class InstanceAtCut(Protocol):
    """One instance at a consistent cut (``debugger._merged.CutState`` is one)."""

    @property
    def instance(self) -> str: ...
    @property
    def lsn(self) -> int: ...
    @property
    def state(self) -> Any: ...
    @property
    def changes(self) -> Sequence[Change]: ...
    @property
    def selected(self) -> bool: ...
    @property
    def error(self) -> str | None: ...


class StateView(Tree[Any]):
    """An expandable tree of the state; changed paths in colour."""

    DEFAULT_CSS = """
    StateView {
        border: round $primary-darken-2;
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("state", id=id)
        self.show_root = True
        self.guide_depth = 3

    def on_mount(self) -> None:
        self.border_title = "state"

    def show_state(self, state: Any, changes: list[Change], *, title: str) -> None:
        """The state tree, with ``changes`` (paths) highlighted and expanded."""
        self.border_title = title
        changed: dict[tuple[Any, ...], str] = {c.path: c.kind for c in changes}
        open_paths = {c.path[:i] for c in changes for i in range(len(c.path))}
        self.clear()
        empty = state is None or (isinstance(state, dict | list) and not state)
        label = (
            "state" if not empty else ("state: not started" if state is None else "state: empty")
        )
        self.root.set_label(Text(label, style="bold"))
        self._fill(self.root, state, (), changed, open_paths)
        self.root.expand()

    def show_diff(self, changes: list[Change], *, title: str) -> None:
        """Only the changes: one node per changed path, old and new values."""
        self.border_title = title
        self.clear()
        self.root.set_label(Text(f"{len(changes)} change(s)", style="bold"))
        for change in changes:
            self.root.add_leaf(_change_label(change))
        self.root.expand()

    def show_cut(
        self,
        states: Sequence[InstanceAtCut],
        *,
        title: str,
        diff: bool,
        colours: dict[str, str],
    ) -> None:
        """Every instance at a consistent cut, one branch each (in its colour): its state with
        what changed highlighted, or (``diff``) only the changes."""
        self.border_title = title
        self.clear()
        self.root.set_label(Text(f"{len(states)} instances", style="bold"))
        for cut in states:
            where = (
                f"after step {cut.lsn}"
                if cut.lsn
                else "before its first step (nothing of it happened before)"
            )
            label = Text.assemble(
                (cut.instance, f"bold {colours.get(cut.instance, '')}"),
                " (selected) " if cut.selected else " ",
                where,
            )
            branch = self.root.add(label, expand=True)
            if cut.error is not None:
                branch.add_leaf(Text(cut.error, style="italic"))
                continue
            if diff:
                branch.set_label(label + Text(f": {len(cut.changes)} change(s)"))
                for change in cut.changes:
                    branch.add_leaf(_change_label(change))
                continue
            changed: dict[tuple[Any, ...], str] = {c.path: c.kind for c in cut.changes}
            open_paths = {c.path[:i] for c in cut.changes for i in range(len(c.path))}
            if cut.state is None or (isinstance(cut.state, dict | list) and not cut.state):
                empty = "nothing of it happened before" if cut.state is None else "empty"
                branch.add_leaf(Text(empty, style="italic"))
            self._fill(branch, cut.state, (), changed, open_paths)
        self.root.expand()

    def show_message(self, message: str) -> None:
        self.clear()
        self.root.set_label(Text(message, style="italic"))

    def _fill(
        self,
        node: TreeNode[Any],
        value: Any,
        path: tuple[Any, ...],
        changed: dict[tuple[Any, ...], str],
        open_paths: set[tuple[Any, ...]],
    ) -> None:
        items: list[tuple[Any, Any]]
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        else:
            return
        for key, child in items[:_MAX_CHILDREN]:
            child_path = (*path, key)
            style = {"changed": _CHANGED, "added": _ADDED}.get(changed.get(child_path, ""), "")
            name = key if isinstance(key, str) else repr(key)
            if isinstance(child, dict | list | tuple) and child:
                kind = "{…}" if isinstance(child, dict) else f"[{len(child)}]"
                label = Text.assemble((str(name), style or "bold"), f" {kind}")
                branch = node.add(label, data=child_path)
                self._fill(branch, child, child_path, changed, open_paths)
                if child_path in open_paths or child_path in changed:
                    branch.expand()
            else:
                node.add_leaf(Text.assemble((f"{name}", style or "bold"), f" = {_brief(child)}"))
        if len(items) > _MAX_CHILDREN:
            node.add_leaf(Text(f"… {len(items) - _MAX_CHILDREN} more", style="italic"))


def _change_label(change: Change) -> Text:
    where = format_path(change.path)
    if change.kind == "added":
        return Text.assemble(("+ ", _ADDED), f"{where} = {_brief(change.new)}")
    if change.kind == "removed":
        return Text.assemble(("- ", _REMOVED), f"{where} (was {_brief(change.old)})")
    return Text.assemble(("~ ", _CHANGED), f"{where}: {_brief(change.old)} → {_brief(change.new)}")


def _brief(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
