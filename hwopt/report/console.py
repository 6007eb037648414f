"""The consoles the CLI prints on: as wide as the terminal, and never squeezed when piped.

rich lays a table out to the console's width, and a console that is not a terminal is 80 columns wide
(or ``$COLUMNS``): ``hwopt estimate > file`` cut values to "6.87-7.…". Piped output is read by
programs and by people in an editor, so when the output is not a terminal the width is wide enough
for any table (tables take their natural width; plain lines never wrap).
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

PIPE_WIDTH = 4096


class PipeConsole(Console):
    """A rich Console whose width is ``PIPE_WIDTH`` when it does not write to a terminal."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("soft_wrap", True)
        super().__init__(**kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        dims = Console.size.fget(self)
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)

    def rule(self, title="", **kwargs) -> None:  # noqa: ANN001 - rich's signature
        """A heading line: rich's full-width rule on a terminal, a short line in a pipe."""
        if self.is_terminal:
            super().rule(title, **kwargs)
        else:
            self.print(f"--- {title} ---", markup=False, highlight=False)
