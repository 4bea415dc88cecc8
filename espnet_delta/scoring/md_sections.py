"""Replace level-2 sections of a Markdown file in place, keeping everything else.

A section is a ``## `` heading line and the lines after it up to the next heading of
level 1 or 2 (``# ``/``## `` outside a fenced code block) or the end of the file. Sections
are matched by their key: the heading up to and including its first ``:``
(``## Table 3: ...`` -> ``## Table 3:``; a heading without ``:`` is its own key), so a
section whose title changed still replaces its old version. The paper-table writer
(:mod:`espnet_delta.bin.paper_tables`) uses this to rewrite one table of RESULTS.md or
``exp/paper_tables.md`` without touching the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from espnet_delta.fileio import write_text_atomic

__all__ = ["replace_sections", "section_key", "split_sections", "write_sections"]


def section_key(heading: str) -> str:
    head, sep, _ = heading.rstrip("\n").partition(":")
    return head.rstrip() + sep


def _is_heading(line: str) -> bool:
    return line.startswith("# ") or line.startswith("## ")


def split_sections(text: str) -> List[Tuple[Optional[str], str]]:
    """``(key, chunk)`` in order; text before the first ``##`` heading, and ``#`` sections,
    have the key ``None``. Joining the chunks gives ``text`` back."""
    chunks: List[Tuple[Optional[str], List[str]]] = [(None, [])]
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and _is_heading(line):
            chunks.append((section_key(line) if line.startswith("## ") else None, []))
        chunks[-1][1].append(line)
    return [(key, "".join(lines)) for key, lines in chunks if lines]


def replace_sections(text: str, sections: Sequence[str]) -> str:
    """``text`` with each of ``sections`` (Markdown starting with its ``## `` heading) in the
    place of the section of the same key; sections not found are appended at the end."""
    new = {}
    for section in sections:
        if not section.startswith("## "):
            raise ValueError(f"a section must start with a '## ' heading, got {section[:40]!r}")
        new[section_key(section.splitlines()[0])] = section.rstrip("\n") + "\n"
    out, done = [], set()
    for key, chunk in split_sections(text):
        if key in new:
            if key not in done:  # a duplicate of a replaced section is dropped
                out.append(new[key] + ("\n" if chunk.endswith("\n\n") else ""))
                done.add(key)
            continue
        out.append(chunk)
    body = "".join(out)
    for key, section in new.items():
        if key not in done:
            body = (body.rstrip("\n") + "\n\n" if body.strip() else "") + section
    return body


def write_sections(path: Path, sections: Sequence[str]) -> Path:
    """Replace (or append) ``sections`` in the Markdown file ``path`` (created when missing), atomically."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    return write_text_atomic(path, replace_sections(text, sections))
