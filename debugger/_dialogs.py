"""Small modal screens: a one-line prompt, the help, and an error that ends the session."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Label, Static

from ._timeline import MARKS

KEYS: list[tuple[str, str]] = [
    ("j / ↓, k / ↑", "next / previous step (next / previous line when stepping into a handler)"),
    ("] / [", "10 steps forward / back"),
    ("} / {", "100 steps forward / back"),
    ("g / home, G / end", "first / last step"),
    (":", "go to an LSN or a wall time (2026-11-24 10:00:00, or 10:00:00)"),
    ("f", "follow the live log (toggle)"),
    ("s", "step into the selected step's handler, line by line; esc leaves"),
    ("b", "add a breakpoint: 'method NAME', 'sender NAME', or a Python condition"),
    ("c / C", "continue to the next breakpoint hit / reverse-continue to the previous one"),
    ("x", "clear breakpoints"),
    ("w", "add a watch expression over `state` (a timeline column)"),
    ("W", "where did the newest watch change? (the previous step at which it changed)"),
    ("l / L", "add a logpoint, a print added to the past (counter.py:17 self.count) / clear them"),
    ("m", "mark the selected step (diff against it with d)"),
    ("d", "toggle the diff view: changes of this step, or against the marked step"),
    ("/ , n / N", "search method, sender and arguments; next / previous match"),
    ("F", "filter: show only the steps that mention a text (empty: all)"),
    ("ctrl+p", "command palette: every action by name"),
    ("?", "this help"),
    ("q", "quit"),
]


class Prompt(ModalScreen[str | None]):
    """Ask for one line of text; dismissed with the text, or None on escape."""

    DEFAULT_CSS = """
    Prompt { align: center middle; }
    Prompt > Vertical {
        width: 80; height: auto; border: round $accent; background: $surface; padding: 0 1;
    }
    Prompt Input { width: 100%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, question: str, *, placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Input(value=self.value, placeholder=self.placeholder)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The key map."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static {
        width: 100; height: auto; border: round $accent; background: $surface; padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "close"),
    ]

    def __init__(
        self,
        extra_keys: list[tuple[str, str]] | None = None,
        extra_marks: list[tuple[str, str]] | None = None,
    ) -> None:
        """``extra_keys`` and ``extra_marks``: those of the merged view, listed first."""
        super().__init__()
        self.extra_keys = extra_keys or []
        self.extra_marks = extra_marks or []

    def compose(self) -> ComposeResult:
        table = Table(title="immortals debug: keys", show_header=False, expand=True)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        if self.extra_keys:
            for key, what in self.extra_keys:
                table.add_row(key, what)
            table.add_section()
        for key, what in KEYS:
            table.add_row(key, what)
        table.add_section()
        for mark, what in self.extra_marks + MARKS:
            table.add_row(f"{mark} in the timeline", what)
        yield Static(table)

    def action_close(self) -> None:
        self.dismiss(None)


class ErrorScreen(Screen[None]):
    """The log cannot be shown at all: say why and what to do, never a traceback."""

    DEFAULT_CSS = """
    ErrorScreen { align: center middle; }
    ErrorScreen > Static { width: 90; border: round $error; padding: 1 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("q,escape", "app.quit", "quit")]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        yield Static(
            Text.assemble(
                ("Cannot open this log\n\n", "bold"), self.message, ("\n\nq quits", "dim")
            )
        )
