"""A paper table as cells, and its Markdown with the paper's published numbers beside it.

:mod:`.paper_tables` fills a :class:`PaperTable` from score dirs, the paper's rows first
and added rows (not in the paper) after them; :meth:`PaperTable.markdown` writes it in one
of the ``compare`` modes: ``cells`` (the published value and run minus paper beside every
compared cell), ``once`` (the published table once below, marked as not comparable: another
corpus and other models) or ``none``. :func:`resolve_compare` turns ``auto`` into ``cells``
when every size of the run is one of the paper's, else ``once``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from . import paper_numbers as paper

__all__ = ["ADDED", "COMPARE_MODES", "Cell", "Column", "PaperTable", "Row", "SizeRoot", "resolve_compare"]

COMPARE_MODES = ("auto", "cells", "once", "none")
ADDED = "*added (not in the paper):*"


@dataclass(frozen=True)
class SizeRoot:
    """One training-data size: its column label and the exp dir of its run."""

    label: str
    exp_dir: Path

    @property
    def paper(self) -> str:
        """The paper's size this one is (``"10 h"`` -> ``"10h"``), ``""`` if none."""
        return paper.paper_size(self.label)


@dataclass
class Cell:
    """One table cell: its text and, for numbers, the value and the published one."""

    text: str
    value: Optional[float] = None
    paper: Optional[float] = None
    paper_mark: str = ""

    def with_paper(self, table: Mapping, key, significant=frozenset()) -> "Cell":
        if key in table:
            self.paper, self.paper_mark = table[key], "*" if key in significant else ""
        return self


@dataclass(frozen=True)
class Column:
    title: str
    compared: bool = False  # has published values: ``cells`` mode adds "paper" and "diff" beside it
    number: bool = True  # right-aligned
    digits: int = 2


@dataclass
class Row:
    cells: List[Cell]
    added: bool = False  # not in the paper


@dataclass
class PaperTable:
    """A built table: ``rows`` of :class:`Cell` under ``columns``; the paper's rows first."""

    number: int
    title: str
    columns: List[Column]
    rows: List[Row] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    missing: List[Tuple[str, str, Path]] = field(default_factory=list)  # (size label, run, path)

    @property
    def heading(self) -> str:
        return f"## Table {self.number}: {self.title}"

    @property
    def header(self) -> List[str]:
        return [c.title for c in self.columns]

    def texts(self, added: Optional[bool] = None) -> List[List[str]]:
        """Cell texts of the rows (only the paper's, ``added=False``; only the added, ``True``)."""
        return [[c.text for c in r.cells] for r in self.rows if added is None or r.added == added]

    def _grid(self, compare: str) -> Tuple[List[str], List[str], List[List[str]]]:
        header, align, body = [], [], []
        for col in self.columns:
            wide = compare == "cells" and col.compared
            header += [col.title, "paper", "diff"] if wide else [col.title]
            align += ["---:" if col.number else "---"] * (3 if wide else 1)
        seen_added = False
        for row in self.rows:
            if row.added and not seen_added:
                body.append([ADDED] + [""] * (len(header) - 1))
                seen_added = True
            line = []
            for col, cell in zip(self.columns, row.cells):
                line.append(cell.text)
                if compare == "cells" and col.compared:
                    if cell.paper is None:
                        line += ["", ""]
                        continue
                    line.append(f"{cell.paper:.2f}{cell.paper_mark}")  # as the paper prints it
                    line.append("" if cell.value is None else f"{cell.value - cell.paper:+.{col.digits}f}")
            body.append(line)
        return header, align, body

    def markdown(self, compare: str = "none") -> str:
        if compare not in COMPARE_MODES or compare == "auto":
            raise ValueError(f"compare must be one of cells, once, none (resolve 'auto' first), got {compare!r}")
        header, align, body = self._grid(compare)
        lines = [self.heading, "", "|" + "|".join(header) + "|", "|" + "|".join(align) + "|"]
        lines += ["|" + "|".join(row) + "|" for row in body]
        notes = list(self.notes)
        if any(r.added for r in self.rows):
            notes.append(f"Rows below {ADDED} are the project's additions; the rows above them are the paper's.")
        if compare == "cells":
            notes.append(f"paper: the published value (arXiv 2601.20142, Table {self.number}, MyST test; `*` as the "
                         "paper marks it); diff: this run minus the paper "
                         "(`espnet_delta/scoring/paper_numbers.py`).")
        for note in notes:
            lines += ["", note]
        if compare == "once":
            lines += ["", f"Published (arXiv 2601.20142, Table {self.number}; MyST with the large hub models; "
                          "`espnet_delta/scoring/paper_numbers.py`). **Not comparable** with the table above: "
                          "another corpus and other models.", "", paper.published_markdown(self.number).rstrip("\n")]
        return "\n".join(lines) + "\n"


def resolve_compare(mode: str, sizes: Sequence[SizeRoot]) -> str:
    """``auto`` -> ``cells`` when every size label is one of the paper's sizes, else ``once``."""
    if mode not in COMPARE_MODES:
        raise ValueError(f"compare mode must be one of {COMPARE_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "cells" if sizes and all(s.paper for s in sizes) else "once"
