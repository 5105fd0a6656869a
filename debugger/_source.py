"""The source pane: the handler that ran for the selected step, the current line marked."""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from ._history import Handler


class SourceView(VerticalScroll, can_focus=False):
    """Syntax-highlighted source of one function; lines the step ran are marked in the gutter.

    A scrolling container around one Static: a handler longer than the pane scrolls, and the
    current line is kept on screen while stepping through lines.
    """

    DEFAULT_CSS = """
    SourceView {
        border: round $primary-darken-2;
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    SourceView > Static { height: auto; }
    """

    current_line: reactive[int | None] = reactive(None)
    """The file line being shown in line-by-line mode (None: not stepping through lines)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.handler: Handler | None = None
        self.ran: set[int] = set()
        self.note = "no step selected"

    def compose(self) -> ComposeResult:
        yield Static()

    def on_mount(self) -> None:
        self.border_title = "source"

    def update(self, content: Syntax | Text) -> None:
        """Show ``content`` (the source, or a note saying why there is none)."""
        self.query_one(Static).update(content)

    def show(self, handler: Handler | None, ran: set[int], note: str = "") -> None:
        self.handler, self.ran, self.note = handler, ran, note
        self.current_line = None
        self._draw()
        self._keep_visible(min(ran) if ran else None)

    def watch_current_line(self, line: int | None) -> None:
        self._draw()
        self._keep_visible(line)

    def _keep_visible(self, line: int | None) -> None:
        """Scroll so file line ``line`` is on screen (a third down, for context above it);
        None scrolls to the top. Done after the refresh that sizes the new source."""
        handler = self.handler
        row = 0 if line is None or handler is None else line - handler.first_line

        def scroll() -> None:
            height = max(1, self.scrollable_content_region.height)
            top = int(self.scroll_y)
            if line is None or not top <= row < top + height:
                self.scroll_to(y=max(0, row - height // 3), animate=False)

        self.call_after_refresh(scroll)

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
