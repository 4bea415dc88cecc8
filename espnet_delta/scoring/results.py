"""``score.json`` of a scored dir, WER numbers, and the RESULTS.md table.

``score.json`` is the machine-readable twin of ``result.txt``: names, input
paths, the Sum counts, whether sclite confirmed them, and every utterance
(normalised reference and hypothesis, alignment ops), so that significance tests
and RESULTS.md need nothing else.  It is written last, so a dir with a
``score.json`` is a finished one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .align import Counts
from .files import ScoringInputError, write_text_atomic
from .inputs import ScoredUtterance
from .report import round_half_up
from .significance import compare_utterances, paired_bootstrap

__all__ = [
    "SCORE_JSON",
    "ScoreSummary",
    "format_results_md",
    "load_score",
    "wer_numbers",
    "write_results_md",
    "write_score_json",
]

SCORE_JSON = "score.json"
_FORMAT = 1
COLUMNS = ("Snt", "Wrd", "Corr", "Sub", "Del", "Ins", "Err", "S.Err")


def wer_numbers(counts: Counts) -> dict[str, float | int]:
    """The ESPnet RESULTS.md columns: Snt and Wrd as counts, the rest in percent
    (rounded to 0.1 as sclite prints them; Err is the WER)."""
    pct = [counts.correct, counts.substitutions, counts.deletions, counts.insertions, counts.errors]
    values = [counts.sentences, counts.words] + [round_half_up(counts.percent(v)) for v in pct]
    values.append(round_half_up(counts.ser))
    return dict(zip(COLUMNS, values))


@dataclass
class ScoreSummary:
    """What ``score.json`` holds (``utterances`` may be empty when not needed)."""

    system: str
    test_set: str
    counts: Counts
    sctk_checked: bool
    utterances: list[ScoredUtterance] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # input paths, tool versions, ...
    score_dir: Path | None = None

    @property
    def wer(self) -> float:
        return self.counts.wer


def write_score_json(path: str | os.PathLike[str], summary: ScoreSummary) -> Path:
    data = {
        "format": _FORMAT,
        "system": summary.system,
        "test_set": summary.test_set,
        "wer": summary.counts.wer,
        "counts": summary.counts.as_dict(),
        "sctk_checked": summary.sctk_checked,
        **summary.info,
        "utterances": [
            {"utt": u.utt_id, "spk": u.spk_id, "ref": " ".join(u.ref), "hyp": " ".join(u.hyp), "ops": u.ops}
            for u in summary.utterances
        ],
    }
    return write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def load_score(score_dir: str | os.PathLike[str]) -> ScoreSummary:
    """Read ``<score_dir>/score.json`` (or a path to the json itself)."""
    path = Path(score_dir)
    if path.is_dir():
        path = path / SCORE_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != _FORMAT:
            raise ScoringInputError(f"{path}: unknown score.json format {data.get('format')!r}")
        utts = []
        for u in data["utterances"]:
            utt = ScoredUtterance(u["utt"], u["spk"], tuple(u["ref"].split()), tuple(u["hyp"].split()), u["ops"])
            utt.steps()  # checks that the ops fit the words
            utts.append(utt)
        info = {k: v for k, v in data.items()
                if k not in ("format", "system", "test_set", "wer", "counts", "sctk_checked", "utterances")}
        return ScoreSummary(data["system"], data["test_set"], Counts(**data["counts"]), bool(data["sctk_checked"]),
                            utts, info, path.parent)
    except FileNotFoundError as e:
        raise ScoringInputError(f"{path}: not found (is this a scored dir? run espnet_delta.bin.score first)") from e
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ScoringInputError):
            raise
        raise ScoringInputError(f"{path}: malformed score.json ({e!r})") from e


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_results_md(
    summaries: Sequence[ScoreSummary],
    baseline: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    title: str = "RESULTS",
) -> str:
    """Markdown: a system x test set WER table, then one ESPnet-style table per test set.

    With ``baseline`` (a system name), each table gets a column with the
    paired-bootstrap p-value of every other system against the baseline on
    that test set (:func:`~espnet_delta.scoring.significance.paired_bootstrap`).
    """
    systems: list[str] = []
    sets: list[str] = []
    cell: dict[tuple[str, str], ScoreSummary] = {}
    for s in summaries:
        key = (s.system, s.test_set)
        if key in cell:
            raise ScoringInputError(f"system {s.system!r} is scored twice on {s.test_set!r}: "
                                    f"{cell[key].score_dir} and {s.score_dir}")
        cell[key] = s
        systems += [s.system] if s.system not in systems else []
        sets += [s.test_set] if s.test_set not in sets else []
    if baseline is not None and baseline not in systems:
        raise ScoringInputError(f"baseline system {baseline!r} is not among the scored systems {systems}")

    out = [f"# {title}", "",
           "Word error rates in percent, sclite-compatible alignment; references and hypotheses normalised by "
           "`espnet_delta.data.text_norm.normalize_transcript` (see `espnet_delta/scoring/__init__.py`).", "",
           "## WER (%)", "",
           "|system|" + "|".join(sets) + "|", "|---|" + "---|" * len(sets)]
    for sys_name in systems:
        row = [_fmt(wer_numbers(cell[(sys_name, t)].counts)["Err"]) if (sys_name, t) in cell else "-" for t in sets]
        out.append(f"|{sys_name}|" + "|".join(row) + "|")
    out.append("")
    for test_set in sets:
        base = cell.get((baseline, test_set)) if baseline else None
        head = "|system|" + "|".join(COLUMNS) + "|" + (f"p vs {baseline}|" if base else "")
        out += [f"## {test_set}", "", head, "|---" * (head.count("|") - 1) + "|"]
        for sys_name in systems:
            s = cell.get((sys_name, test_set))
            if s is None:
                continue
            row = f"|{sys_name}|" + "|".join(_fmt(v) for v in wer_numbers(s.counts).values()) + "|"
            if base:
                if s is base:
                    row += "-|"
                else:
                    ea, eb, words = compare_utterances(base.utterances, s.utterances)
                    row += _p(paired_bootstrap(ea, eb, words, n_resamples=n_resamples, seed=seed).p_value) + "|"
            out.append(row)
        out.append("")
    if baseline:
        out += [f"p: two-sided paired bootstrap over utterances ({n_resamples} resamples, seed {seed}) of "
                f"WER(system) - WER({baseline}) on the same test set; see `espnet_delta/scoring/significance.py`.", ""]
    return "\n".join(out)


def write_results_md(
    path: str | os.PathLike[str],
    score_dirs: Sequence[str | os.PathLike[str]],
    baseline: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    title: str = "RESULTS",
) -> Path:
    """Write RESULTS.md (atomically) from scored dirs (each with a ``score.json``)."""
    if not score_dirs:
        raise ScoringInputError("no scored dirs given for RESULTS.md")
    summaries = [load_score(d) for d in score_dirs]
    return write_text_atomic(path, format_results_md(summaries, baseline, n_resamples, seed, title))
