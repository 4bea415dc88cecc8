"""Error rates over several training seeds: mean, spread and a significance test that pools the seeds.

A ``--seeds 0,1,2`` run of the stage engine trains every system once per seed (seed 0 in
``exp/``, seed k in ``exp/seed<k>/``; docs/recipes.md). One seed's numbers move by a point or
two with the seed alone, so RESULTS.md gets one more section (:func:`format_seeds_md`): per
system and test set the mean and the sample standard deviation (n - 1 in the denominator) of
the corpus-level WER and CER over the seeds, each seed's value, and a test against the
baseline system that pools the seeds (:func:`pooled_bootstrap`).

The pooled test is the paired bootstrap of :mod:`.significance` over utterances, with the
seeds summed: every resample draws utterances once (the test set is the same for every seed)
and takes, for that draw, the error-rate difference system - baseline of each seed, summed
over the seeds. Since every seed has the same reference words, this equals
:func:`~.significance.paired_bootstrap` on per-utterance error counts summed over the seeds,
with the reference words summed as well; its ``delta`` is then the mean over the seeds of the
per-seed differences. The project's reading: the seeds themselves are not resampled (three
seeds are too few for that), so the p-value says whether the difference holds for these
seeds on this test set; the standard deviations show how far single seeds scatter.
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .inputs import ScoredUtterance, ScoringInputError
from .report import round_half_up
from .results import ScoreSummary, _level, _p
from .significance import BootstrapResult, compare_utterances, paired_bootstrap

__all__ = ["SEEDS_HEADING", "format_seeds_md", "mean_std", "pooled_bootstrap", "seed_system", "seed_table"]

#: the section's heading key (md_sections: up to the first ':')
SEEDS_HEADING = "## Seeds:"
UNITS = ("WER", "CER")

Cell = Tuple[str, str]  # (system, test set)

#: stage 8 names a merge after its dev-chosen grid point (``merge_sa_adult_power_l0.1_a0.9``), and each
#: seed may choose another point: over the seeds the row is the method (``merge_sa*``), each seed's
#: value that of its own chosen point
_MERGE_POINT = re.compile(r"^(merge(?:_whisper)?_(?:sa|lerp|ta|ties))_.+$")


def seed_system(system: str) -> str:
    """The row name of ``system`` over the seeds: a merge's method with ``*``, else the system itself."""
    match = _MERGE_POINT.match(system)
    return f"{match.group(1)}*" if match else system


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation of a single value is NaN."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else math.nan)


def pooled_bootstrap(pairs: Sequence[Tuple[Sequence[ScoredUtterance], Sequence[ScoredUtterance]]],
                     n_resamples: int = 1000, seed: int = 0) -> BootstrapResult:
    """The paired bootstrap over utterances with the seeds summed (module docstring).

    ``pairs``: per training seed, (baseline utterances, system utterances) of one test set, at the
    word or the character level. Every seed must have scored the same utterances against the same
    references. ``delta``, ``wer_a`` and ``wer_b`` come back as means over the seeds.
    """
    if not pairs:
        raise ValueError("no seeds to pool")
    first = pairs[0][0]
    sums = None
    for base, system in pairs:
        _, errors_base, words = compare_utterances(first, base)  # the baseline's errors in the first seed's order
        _, errors_system, _ = compare_utterances(first, system)
        arrays = np.array([errors_base, errors_system, words], dtype=np.int64)
        sums = arrays if sums is None else sums + arrays
    return paired_bootstrap(sums[0], sums[1], sums[2], n_resamples=n_resamples, seed=seed)


def _cells(runs: Mapping[int, Sequence[ScoreSummary]]) -> Tuple[List[str], List[str], Dict[int, Dict[Cell, ScoreSummary]]]:
    systems: List[str] = []
    sets: List[str] = []
    by_seed: Dict[int, Dict[Cell, ScoreSummary]] = {}
    for run_seed, summaries in runs.items():
        cells = by_seed.setdefault(run_seed, {})
        for s in summaries:
            system = seed_system(s.system)
            if (system, s.test_set) in cells:
                raise ScoringInputError(f"seed {run_seed}: system {system!r} is scored twice on {s.test_set!r}: "
                                        f"{cells[(system, s.test_set)].score_dir} and {s.score_dir}")
            cells[(system, s.test_set)] = s
            systems += [system] if system not in systems else []
            sets += [s.test_set] if s.test_set not in sets else []
    return systems, sets, by_seed


def seed_table(runs: Mapping[int, Sequence[ScoreSummary]], unit: str, baseline: str | None = None,
               n_resamples: int = 1000, seed: int = 0) -> List[dict]:
    """One row per (system, test set): ``values`` (training seed -> error rate in percent, the
    seeds that scored it), ``mean``, ``std`` and, against ``baseline`` on the seeds both have,
    ``test`` (a :class:`~.significance.BootstrapResult`, None for the baseline itself)."""
    systems, sets, by_seed = _cells(runs)
    if baseline is not None and baseline not in systems:
        raise ScoringInputError(f"baseline system {baseline!r} is not among the scored systems {systems}")
    rows = []
    for test_set in sets:
        for system in systems:
            present = {k: cells[(system, test_set)] for k, cells in by_seed.items() if (system, test_set) in cells}
            if not present:
                continue
            values = {k: _level(s, unit)[0].wer for k, s in present.items()}
            mean, std = mean_std(list(values.values()))
            test = None
            if baseline is not None and system != baseline:
                pairs = [(_level(by_seed[k][(baseline, test_set)], unit)[1], _level(s, unit)[1])
                         for k, s in present.items() if (baseline, test_set) in by_seed[k]]
                test = pooled_bootstrap(pairs, n_resamples, seed) if pairs else None
            rows.append({"system": system, "test_set": test_set, "values": values, "mean": mean, "std": std,
                         "test": test})
    return rows


def _num(value: float) -> str:
    return "-" if math.isnan(value) else f"{round_half_up(value):.1f}"


def format_seeds_md(runs: Mapping[int, Sequence[ScoreSummary]], baseline: str | None = None,
                    n_resamples: int = 1000, seed: int = 0) -> str:
    """The RESULTS.md section over the training seeds ``runs`` (seed -> its scored summaries), or
    ``""`` with fewer than two seeds (a one-seed RESULTS.md is left as it was)."""
    if len(runs) < 2:
        return ""
    seeds = list(runs)
    names = ", ".join(str(k) for k in seeds)
    out = [f"{SEEDS_HEADING} mean and spread over {len(seeds)} training seeds ({names})", "",
           "The tables above are seed 0's run; here every system is trained once per seed (`--seeds`, docs/recipes.md). "
           "mean and std: corpus-level error rate in percent over the seeds that scored the system, "
           "std the sample standard deviation (n - 1); `-` where a seed has no score. `merge_<method>*`: "
           "each seed's dev-chosen grid point of that method (named in that seed's merging section).", ""]
    test_cols = f"|mean delta vs {baseline}|p vs {baseline}|" if baseline else "|"
    for unit in UNITS:
        head = "|system|test set|mean|std|" + "|".join(f"seed {k}" for k in seeds) + test_cols
        out += [f"### {unit} (%)", "", head, "|---" * (head.count("|") - 1) + "|"]
        for row in seed_table(runs, unit, baseline, n_resamples, seed):
            cells = [row["system"], row["test_set"], _num(row["mean"]), _num(row["std"])]
            cells += [_num(row["values"][k]) if k in row["values"] else "-" for k in seeds]
            if baseline:
                test = row["test"]
                cells += [f"{round_half_up(test.delta):+.1f}", _p(test.p_value)] if test else ["-", "-"]
            out.append("|" + "|".join(cells) + "|")
        out.append("")
    if baseline:
        out += [f"mean delta: mean over the seeds of {{WER(system) - WER({baseline})}} (CER tables: of the CERs); "
                f"p: two-sided paired bootstrap over utterances ({n_resamples} resamples, seed {seed}) that pools the "
                "training seeds: each resample draws the utterances once and sums the per-seed differences; the seeds "
                "are not resampled (see `espnet_delta/scoring/seeds.py`).", ""]
    return "\n".join(out)
