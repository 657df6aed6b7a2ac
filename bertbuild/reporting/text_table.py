"""The one plain-text table: every table a command or a run prints goes through `text_table`."""

from __future__ import annotations

from typing import Sequence


def text_table(rows: Sequence[Sequence[str]], left: int | None = 1, rule: bool = True) -> str:
    """`rows[0]` is the header; each column is padded to its widest cell, two spaces between columns.

    The first `left` columns are left-aligned (text), the rest right-aligned (numbers line up on
    their last digit); `left=None` left-aligns every column. `rule` puts dashes under the header.
    A row may be longer than the header (a trailing note): its extra cells get a width of their own.
    """
    count = max(map(len, rows))
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(count)]
    left = count if left is None else left

    def line(cells: Sequence[str]) -> str:
        padded = (c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()  # a left-aligned last cell would leave trailing spaces

    lines = [line(rows[0])]
    if rule:
        lines.append(line(["-" * w for w in widths]))
    return "\n".join(lines + [line(row) for row in rows[1:]])
