"""How the CLI prints tables: every value whole and on one line, at 80 columns, on a TTY or in a log.

Rich fits a table that is wider than its console by wrapping cells at spaces ("0.128 ±" over
"0.000") or, in ``no_wrap`` columns, by cutting them ("pa…"). Here instead:

* every column is ``no_wrap``: a value never spans lines;
* a table is rendered at its natural width even when that exceeds the console's (the real
  terminal's width on a TTY; ``COLUMNS`` or :data:`PIPED_WIDTH` when piped), so nothing is ever
  cut. Fitting 80 columns is the job of each table's layout (fewer columns, a compact style, a
  legend under the table), checked by tests/test_cli_tables.py with :func:`render_text`;
* one compact house style (no vertical rules) so that the layouts fit.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable
from typing import IO, Literal

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.segment import Segments
from rich.table import Table

#: Console width when stdout is not a terminal and ``COLUMNS`` is unset (rich would use 80).
PIPED_WIDTH = 100
#: The width every table layout is designed (and tested) to fit.
TARGET_WIDTH = 80

Justify = Literal["left", "right", "center"]
#: A column of :func:`new_table`: its header (left-aligned), or (header, justify).
Col = str | tuple[str, Justify]


def _is_tty(file: IO[str] | None) -> bool:
    f = file if file is not None else sys.stdout
    try:
        return bool(f.isatty())
    except (AttributeError, ValueError):  # closed or a stand-in without isatty
        return False


def make_console(file: IO[str] | None = None, *, stderr: bool = False, width: int | None = None) -> Console:
    """A console as wide as the real terminal on a TTY, else ``COLUMNS`` or :data:`PIPED_WIDTH`.

    Rich itself falls back to 80 columns (or to the size of a terminal on stdin) when output goes
    to a file, which wraps summary lines in CI logs more than needed.
    """
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    if width is None and not os.environ.get("COLUMNS", "").isdigit() and not _is_tty(stream):
        width = PIPED_WIDTH
    return Console(file=file, stderr=stderr, width=width)


#: The CLI's stdout (results). Progress and notices go to :data:`fedsynth.cli.common.console`.
out = make_console()


def house_style(table: Table) -> Table:
    """Apply the compact style and the never-wrap policy to ``table`` (in place; idempotent).

    ``overflow="ellipsis"`` is rich's default, kept on purpose: should a table ever be rendered
    narrower than its natural width, a cut shows as "…" (tests look for it) instead of the silent
    cut that ``"fold"`` produces in a ``no_wrap`` column.
    """
    table.box = box.SIMPLE_HEAD
    table.show_edge = False
    table.title_justify = table.caption_justify = "left"
    table.collapse_padding = True
    for col in table.columns:
        col.no_wrap = True
        col.overflow = "ellipsis"
    return table


def new_table(
    title: str | None,
    columns: Iterable[Col],
    *,
    caption: str | None = None,
) -> Table:
    """A house-style table; a column is a header, or (header, justify) for numbers."""
    t = Table(title=title, caption=caption)
    for c in columns:
        if isinstance(c, str):
            t.add_column(c)
        else:
            t.add_column(c[0], justify=c[1])
    return house_style(t)


def natural_width(table: Table, console: Console) -> int:
    """Columns the table needs for every cell on one line (title and caption not counted)."""
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` in the house style, never narrower than its natural width, then a blank line.

    ``Console.print(width=...)`` cannot exceed the console's width, so the table is rendered at the
    width it needs and written as segments with cropping off.
    """
    c = console if console is not None else out
    house_style(table)
    width = max(c.width, natural_width(table, c))
    # Title and caption are printed as lines of their own: inside the table they would wrap at the
    # table's width, which for a narrow table splits even a short title.
    title, caption = table.title, table.caption
    table.title = table.caption = None
    try:
        if title is not None:
            c.print(title, style="table.title", highlight=False)
        c.print(Segments(c.render(table, c.options.update_width(width))), crop=False, end="")
        if caption is not None:
            c.print(caption, style="table.caption", highlight=False)
    finally:
        table.title, table.caption = title, caption
    c.print()  # a blank line keeps consecutive tables (no bottom rule) apart


def render_text(renderables: Table | Iterable[RenderableType], width: int = TARGET_WIDTH) -> str:
    """Plain text as printed to a ``width``-column console that is not a terminal (for tests).

    Tables go through :func:`print_table`; anything else (a legend, a line of text) is printed
    as the CLI prints it.
    """
    buf = io.StringIO()
    c = Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    for r in [renderables] if isinstance(renderables, Table) else renderables:
        if isinstance(r, Table):
            print_table(r, c)
        else:
            c.print(r)
    return buf.getvalue()


__all__ = [
    "PIPED_WIDTH",
    "TARGET_WIDTH",
    "Col",
    "house_style",
    "make_console",
    "natural_width",
    "new_table",
    "out",
    "print_table",
    "render_text",
]
