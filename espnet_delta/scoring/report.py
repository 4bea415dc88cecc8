"""sclite-like text reports: per-speaker summary tables and alignments.

``result.txt`` (see :func:`format_report`) mirrors ``sclite -o all``:

* "SYSTEM SUMMARY PERCENTAGES by SPEAKER": one row per speaker (in order of
  first appearance, like sclite), the ``Sum/Avg`` row, and ``Mean`` /
  ``S.D.`` (sample standard deviation, n - 1) / ``Median`` over speakers;
* the same table in counts (``Sum`` row);
* every utterance's alignment (``REF``/``HYP``/``Eval``, correct words in
  lower case, ``*`` for the missing side), as sclite's ``pralign``.

sclite conventions kept: a speaker without reference words shows counts
marked ``*`` instead of percentages and is left out of the Mean/S.D./Median
of the percentage columns (marked ``+``); when the whole set has no
reference words, the Sum/Avg percentages are all 0.0 (S.Err excepted).
The ``Sum/Avg`` row is the only line of the report that contains ``Avg``:
ESPnet's ``scripts/utils/show_asr_result.sh`` greps for it.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Sequence

from espnet_delta.data.word_align import Counts
from .inputs import ScoredUtterance
from .trn import trn_id

__all__ = ["format_alignments", "format_report", "format_summary", "round_half_up", "speaker_counts", "speaker_stats", "sum_avg_line"]

_PCT_COLS = ("correct", "substitutions", "deletions", "insertions", "errors")
_HEAD_LEFT = ("# Snt", "# Wrd")
_HEAD_RIGHT = ("Corr", "Sub", "Del", "Ins", "Err", "S.Err")


def speaker_counts(utterances: Iterable[ScoredUtterance]) -> dict[str, Counts]:
    """Speaker -> summed counts, speakers in order of first appearance."""
    by_spk: dict[str, Counts] = {}
    for u in utterances:
        by_spk[u.spk_id] = by_spk.get(u.spk_id, Counts()) + u.counts
    return by_spk


def _values(c: Counts, percent: bool) -> list[float]:
    """The eight table columns of one row: Snt, Wrd, Corr, Sub, Del, Ins, Err, S.Err."""
    right = [getattr(c, name) for name in _PCT_COLS] + [c.sentence_errors]
    if percent:
        right = [c.percent(v) for v in right[:-1]] + [c.ser]
    return [c.sentences, c.words, *right]


def speaker_stats(by_speaker: dict[str, Counts], percent: bool = True) -> dict[str, list[float]]:
    """``Mean``/``S.D.``/``Median`` of each table column over speakers.

    S.D. is the sample standard deviation (n - 1; 0.0 for one speaker), the
    median of an even count the mean of the middle two, as in sclite.  In the
    percentage table, speakers without reference words are left out of the
    Corr..Err columns (0.0 when no speaker is left, as sclite prints).
    sclite 2.10 means to do the same, but its loop that drops those speakers
    shifts the wrong entries when two or more of them exist, so its Mean /
    S.D. / Median of Corr..Err can differ from ours in that case (only).
    """
    rows = [(_values(c, percent), c.words > 0) for c in by_speaker.values()]
    out: dict[str, list[float]] = {"Mean": [], "S.D.": [], "Median": []}
    for col in range(8):
        use_all = not percent or col < 2 or col == 7
        column = [vals[col] for vals, has_words in rows if use_all or has_words]
        out["Mean"].append(statistics.fmean(column) if column else 0.0)
        out["S.D."].append(statistics.stdev(column) if len(column) > 1 else 0.0)
        out["Median"].append(statistics.median(column) if column else 0.0)
    return out


def _render(title: str, speakers: list[tuple[str, list[str]]], sum_row: tuple[str, list[str]],
            stats: list[tuple[str, list[str]]]) -> list[str]:
    """Box-draw a table from its rows of (label, eight cell strings)."""
    head_cells = [h + " " for h in _HEAD_LEFT + _HEAD_RIGHT]
    rows = [*speakers, sum_row, *stats]
    widths = [max(5, len(head_cells[k]), *(len(cells[k]) for _, cells in rows)) for k in range(8)]
    label_w = max(len(label) for label, _ in rows) + 1

    def line(label: str, cells: Sequence[str]) -> str:
        left = " ".join(c.rjust(w) for c, w in zip(cells[:2], widths[:2]))
        right = " ".join(c.rjust(w) for c, w in zip(cells[2:], widths[2:]))
        return f"| {label.ljust(label_w)}| {left} | {right} |"

    head = line("SPKR", head_cells)
    inner = len(head) - 2
    sep = "|" + "".join("+" if ch == "|" else "-" for ch in head[1:-1]) + "|"
    dbl = "|" + "=" * inner + "|"
    out = ["," + "-" * inner + ".", "|" + title.center(inner) + "|", "|" + "-" * inner + "|", head]
    for label, cells in speakers:
        out += [sep, line(label, cells)]
    out += [dbl, line(*sum_row), dbl]
    out += [line(label, cells) for label, cells in stats]
    out.append("`" + "-" * inner + "'")
    return out


def round_half_up(value: float, decimals: int = 1) -> float:
    """sclite's rounding before printing (``F_ROUND`` in SCTK): halves round away from zero."""
    scale = 10.0**decimals
    return math.trunc(value * scale + (0.5 if value > 0 else -0.5)) / scale


def _cell(value: float, decimals: int, mark: str = " ") -> str:
    return f"{round_half_up(value, decimals):.{decimals}f}{mark}"


def format_summary(by_speaker: dict[str, Counts], title: str = "hyp.trn", percent: bool = True) -> str:
    """One sclite summary table, in percentages (``Sum/Avg`` row) or counts (``Sum`` row)."""
    decimals = 1 if percent else 0
    speakers = []
    for spk, c in by_speaker.items():
        vals = _values(c, percent)
        cells = [_cell(v, 0) for v in vals[:2]]
        if percent and c.words == 0:  # no reference words: counts instead of percentages
            cells += [_cell(getattr(c, n), 0, "*") for n in _PCT_COLS] + [_cell(vals[7], 1)]
        else:
            cells += [_cell(v, decimals) for v in vals[2:]]
        speakers.append((spk, cells))
    vals = _values(sum(by_speaker.values(), Counts()), percent)
    sum_row = ("Sum/Avg" if percent else "Sum", [_cell(v, 0) for v in vals[:2]] + [_cell(v, decimals) for v in vals[2:]])
    skipped = percent and any(c.words == 0 for c in by_speaker.values())
    marks = [" ", " "] + ["+" if skipped else " "] * 5 + [" "]
    stats = [(f" {name}", [_cell(v, 1, m) for v, m in zip(stat, marks)])
             for name, stat in speaker_stats(by_speaker, percent).items()]
    lines = _render(title, speakers, sum_row, stats)
    kind = "PERCENTAGES" if percent else "COUNTS"
    text = [f"SYSTEM SUMMARY {kind} by SPEAKER".center(len(lines[0])), "", *lines]
    if skipped:
        text += [
            "* No reference words for this speaker: word counts instead of percentages.",
            "+ Speakers with no reference words are left out of this statistic.",
        ]
    return "\n".join(text) + "\n"


def sum_avg_line(by_speaker: dict[str, Counts]) -> str:
    """The ``| Sum/Avg| ...`` line of the percentage table."""
    return next(line for line in format_summary(by_speaker).splitlines() if "Sum/Avg" in line)


def format_alignments(utterances: Iterable[ScoredUtterance]) -> str:
    """sclite-``pralign``-like dump of every utterance's alignment."""
    out = []
    for u in utterances:
        r_row, h_row, e_row = [], [], []
        for op, r, h in u.steps():
            if op == "C":
                r, h = r.lower(), h.lower()
            r, h = r or "*" * len(h), h or "*" * len(r)
            w = max(len(r), len(h))
            r_row.append(r.ljust(w))
            h_row.append(h.ljust(w))
            e_row.append(("" if op == "C" else op).ljust(w))
        c = u.counts
        out += [
            f"id: ({trn_id(u)})",
            f"Scores: (#C #S #D #I) {c.correct} {c.substitutions} {c.deletions} {c.insertions}",
            "REF:  " + " ".join(r_row),
            "HYP:  " + " ".join(h_row),
            "Eval: " + " ".join(e_row),
            "",
        ]
    return "\n".join(out) + ("\n" if out else "")


def format_report(utterances: Sequence[ScoredUtterance], header: Sequence[str] = (), title: str = "hyp.trn") -> str:
    """The whole ``result.txt``: header lines, both summary tables, alignments."""
    by_spk = speaker_counts(utterances)
    parts = [
        "\n".join(header) + "\n" if header else "",
        format_summary(by_spk, title, percent=True),
        format_summary(by_spk, title, percent=False),
        "\t\tALIGNMENTS\n",
        format_alignments(utterances),
    ]
    return "\n\n".join(p for p in parts if p)
