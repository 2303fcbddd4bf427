"""Rows of text as a plain table with box-drawing borders, laid out for a width: what the
table format of caltrail/pipeline/output.py prints. No colour, no markup (a value from a log
is printed as it is), safe to paste into a case note.

Each column gets at least its shortest readable width (a HWID, an FQDN or a time stay
whole; prose may wrap); the room left is shared among the columns that want more. When not
all columns fit, the first ones are shown and a `…` column, and a line says how many there
are. A long cell wraps inside its column; a line break in a value is shown as ⏎.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import Any

MAX_CELL = 80  # characters of a cell, unless the caller keeps cells whole


def _cell_text(value: Any, max_cell: int | None) -> str:
    """A value as one table cell: line breaks shown as ⏎ (a row stays a row), cut at
    `max_cell` characters (None: never)."""
    text = "" if value is None else str(value)
    if "\n" in text or "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ⏎ ")
    if max_cell is not None and len(text) > max_cell:
        text = text[: max_cell - 1] + "…"
    return text


def _min_width(name: str, cells: list[str]) -> int:
    """The width under which a column is not squeezed: its longest word, up to 40
    characters in a column of single words (a HWID, an FQDN, a time stay whole) and 24 in
    prose, and at least the header's first 12 characters."""
    words = [w for c in cells for w in c.split()]
    cap = 40 if all(" " not in c.strip() for c in cells) else 24
    longest = max((len(w) for w in words), default=0)
    natural = max([len(name), *(len(c) for c in cells)])
    return min(natural, max(min(longest, cap), min(len(name), 12), 1))


def table_width() -> int:
    """The width a table is laid out in: the terminal's, or 160 characters in a file."""
    if sys.stdout.isatty():
        return max(60, shutil.get_terminal_size((160, 24)).columns)
    return 160


def table_text(
    names: list[str],
    rows: list[list[Any]],
    skipped_after: int | None = None,
    width: int | None = None,
    right: list[bool] | None = None,
    max_cell: int | None = MAX_CELL,
) -> str:
    """Rows as a plain text table with box-drawing borders (no colour; safe to paste into a
    case note). A cell wraps at blanks within its column, a word longer than the column is
    cut across lines; `right`: the columns aligned right (numbers).

    `skipped_after`: the row index after which a line of dots stands for rows not shown.
    Every column gets at least its shortest readable width (`_min_width`); when not all fit
    in `width`, the first ones are shown and a `…` column, and a last line says how many
    there are."""
    width = width or table_width()
    cells = [[_cell_text(v, max_cell) for v in row] for row in rows]
    minimum = [_min_width(n, [r[i] for r in cells]) for i, n in enumerate(names)]
    natural = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    shown = _columns_that_fit(minimum, width)
    widths = _widths(
        [minimum[i] for i in shown if i is not None],
        [natural[i] for i in shown if i is not None],
        width - 3 * len(shown) - 1,
    )
    it = iter(widths)
    column_widths = [1 if i is None else next(it) for i in shown]
    aligned = [False if i is None or right is None else right[i] for i in shown]

    def line(left: str, middle: str, end: str) -> str:
        return left + middle.join("─" * (w + 2) for w in column_widths) + end

    def row_lines(values: list[str]) -> list[str]:
        wrapped = [_wrap(v, w) for v, w in zip(values, column_widths, strict=True)]
        height = max((len(w) for w in wrapped), default=1)
        out = []
        for k in range(height):
            parts = []
            for lines, w, r in zip(wrapped, column_widths, aligned, strict=True):
                text = lines[k] if k < len(lines) else ""
                parts.append(text.rjust(w) if r else text.ljust(w))
            out.append("│ " + " │ ".join(parts) + " │")
        return out

    text = [line("┌", "┬", "┐")]
    text += row_lines(["…" if i is None else names[i] for i in shown])
    text.append(line("├", "┼", "┤"))
    for k, row in enumerate(cells):
        text += row_lines(["…" if i is None else row[i] for i in shown])
        if skipped_after is not None and k == skipped_after:
            text += row_lines(["·" for _ in shown])
    text.append(line("└", "┴", "┘"))
    if None in shown:
        count = len(shown) - 1
        text.append(f"{len(names)} columns ({count} shown; --format csv or json has them all)")
    return "\n".join(text) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _widths(minimum: list[int], natural: list[int], room: int) -> list[int]:
    """Column widths: each its minimum, the room left shared among the columns that want
    more, in proportion to what they want, none past its natural width."""
    widths = list(minimum)
    spare = room - sum(widths)
    while spare > 0:
        wanting = [i for i, w in enumerate(widths) if w < natural[i]]
        if not wanting:
            break
        want = sum(natural[i] - widths[i] for i in wanting)
        given = 0
        for i in wanting:
            extra = max(1, (natural[i] - widths[i]) * spare // want)
            extra = min(extra, natural[i] - widths[i], spare - given)
            widths[i] += extra
            given += extra
            if given >= spare:
                break
        spare -= given
        if given == 0:
            break
    return widths


def _columns_that_fit(minimum: list[int], width: int) -> list[int | None]:
    """The columns shown, in order, with None where the hidden ones are: the first ones,
    while their minimum widths and borders fit (a query names its important columns first)."""
    if sum(m + 3 for m in minimum) + 1 <= width:
        return list(range(len(minimum)))
    shown: list[int] = []
    used = 1 + 4  # the table's left border and the `…` column
    for index, least in enumerate(minimum):
        if used + least + 3 > width and shown:
            break
        used += least + 3
        shown.append(index)
    return [*shown, None]


__all__ = ["MAX_CELL", "table_text", "table_width"]
