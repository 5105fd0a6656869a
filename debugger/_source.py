"""The source pane: the handler that ran for the selected step, the current line marked."""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ._history import Handler


class SourceView(Static):
    """Syntax-highlighted source of one function; lines the step ran are marked in the gutter."""

    DEFAULT_CSS = """
    SourceView {
        border: round $primary-darken-2;
        height: 1fr;
        overflow-y: auto;
    }
    """

    current_line: reactive[int | None] = reactive(None)
    """The file line being shown in line-by-line mode (None: not stepping through lines)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.handler: Handler | None = None
        self.ran: set[int] = set()
        self.note = "no step selected"

    def on_mount(self) -> None:
        self.border_title = "source"

    def show(self, handler: Handler | None, ran: set[int], note: str = "") -> None:
        self.handler, self.ran, self.note = handler, ran, note
        self.current_line = None
        self._draw()

    def watch_current_line(self) -> None:
        self._draw()

    def _draw(self) -> None:
        handler = self.handler
        if handler is None:
            self.border_subtitle = ""
            self.update(Text(self.note or "no source for this step", style="italic"))
            return
        last = handler.first_line + len(handler.lines) - 1
        self.border_title = f"source: {handler.function}()"
        self.border_subtitle = f"{_tail(handler.file)}:{handler.first_line}-{last}"
        highlight = {self.current_line} if self.current_line is not None else self.ran
        syntax = Syntax(
            "\n".join(handler.lines),
            "python",
            line_numbers=True,
            start_line=handler.first_line,
            highlight_lines=highlight,
            theme="monokai",
            word_wrap=False,
        )
        self.update(syntax)


def _tail(path: str, parts: int = 2) -> str:
    pieces = path.replace("\\", "/").split("/")
    return "/".join(pieces[-parts:])
