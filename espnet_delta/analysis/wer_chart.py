"""WER of every scored system per test set, with paired-bootstrap intervals.

The interval of a bar reuses :func:`espnet_delta.scoring.significance.paired_bootstrap`
with an error-free system as A: its ``delta`` is then the system's corpus WER and
``[ci_low, ci_high]`` the percentile interval of the WER over resamples of
utterances. The resamples depend only on the seed and the number of utterances,
and every system of a test set is read in the same utterance order (checked by
:func:`~espnet_delta.scoring.significance.compare_utterances` against the set's first
system), so all bars of a set are computed on the *same* resamples: the intervals
are paired, like the p-values of RESULTS.md. A system scored on other utterances
than the set's first system is left out of that chart, with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from espnet_delta.scoring import ScoringInputError, compare_utterances, load_score, paired_bootstrap

Row = Tuple[str, float, float, float]  # system, WER, interval low, interval high (percent)


def find_score_dirs(exp_dir: Path) -> List[Path]:
    """Every ``<exp_dir>/<system>/decode/<set>/score_wer`` holding a ``score.json``."""
    return sorted(p.parent for p in Path(exp_dir).glob("*/decode/*/score_wer/score.json"))


def wer_intervals(
    score_dirs: Sequence[Path], sets: Sequence[str] = (), n_resamples: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> Dict[str, List[Row]]:
    """``test set -> [(system, WER, low, high)]`` (systems sorted by name; ``sets`` empty = all)."""
    by_set: Dict[str, list] = {}
    for d in score_dirs:
        summary = load_score(d)
        if sets and summary.test_set not in sets:
            continue
        by_set.setdefault(summary.test_set, []).append(summary)
    out: Dict[str, List[Row]] = {}
    for test_set, summaries in sorted(by_set.items()):
        summaries.sort(key=lambda s: s.system)
        first = summaries[0]
        rows = []
        for s in summaries:
            try:
                _, errors, words = compare_utterances(first.utterances, s.utterances)
            except ScoringInputError as e:
                logging.warning("%s on %s: left out of the WER chart: not paired with %s (%s)",
                                s.system, test_set, first.system, e)
                continue
            res = paired_bootstrap([0] * len(errors), errors, words, n_resamples=n_resamples, seed=seed,
                                   confidence=confidence)
            rows.append((s.system, res.wer_b, res.ci_low, res.ci_high))
        out[test_set] = rows
    return out


def format_interval_table(intervals: Dict[str, List[Row]], n_resamples: int, seed: int, confidence: float) -> str:
    lines = [f"# paired bootstrap over utterances: {n_resamples} resamples, seed {seed}, "
             f"{100 * confidence:g} % percentile interval",
             "test_set\tsystem\twer\tlow\thigh"]
    for test_set, rows in intervals.items():
        lines += [f"{test_set}\t{name}\t{w:.4f}\t{lo:.4f}\t{hi:.4f}" for name, w, lo, hi in rows]
    return "\n".join(lines) + "\n"


def chart_path(out_dir: Path, test_set: str) -> Path:
    return Path(out_dir) / f"wer_{test_set}.png"
