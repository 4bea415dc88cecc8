"""Is system B's WER different from system A's on the same test set?

Two tests on per-utterance error counts (``S + D + I`` of each utterance,
from the same sclite-compatible alignment as the WER):

* :func:`paired_bootstrap` (the main one; Bisani & Ney, ICASSP 2004): draw
  utterances with replacement (``n_resamples`` times, seeded numpy
  generator), recompute ``delta = WER_B - WER_A`` (corpus-level, in percent
  points) on each resample.  Two-sided p-value of "no difference" from the
  bootstrap distribution centred on the observed delta (Efron & Tibshirani,
  ch. 16): ``p = (1 + #{|delta* - delta| >= |delta|}) / (1 + n_resamples)``.
  Also reported: the percentile confidence interval of delta and the
  probability of improvement ``P(delta* < 0)`` (B better than A).
* :func:`matched_pairs_test`: a z test on the per-utterance differences of
  error counts, i.e. NIST's MAPSSWE with whole utterances as segments
  (sc_stats cuts utterances further at words both systems got right; run it
  with :func:`espnet_delta.scoring.sctk.run_mapsswe` when SCTK is present).

:func:`compare_utterances` checks that both systems scored the same
utterances against the same references before testing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .inputs import ScoredUtterance, ScoringInputError

__all__ = ["BootstrapResult", "MatchedPairsResult", "compare_utterances", "matched_pairs_test", "paired_bootstrap"]


@dataclass(frozen=True)
class BootstrapResult:
    n_utterances: int
    n_resamples: int
    seed: int
    wer_a: float  # percent
    wer_b: float
    delta: float  # wer_b - wer_a, percent points
    ci_low: float  # percentile interval of delta
    ci_high: float
    confidence: float
    p_value: float  # two-sided, H0: no difference
    prob_b_better: float  # fraction of resamples with delta* < 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MatchedPairsResult:
    n_utterances: int
    mean_diff: float  # mean over utterances of errors_b - errors_a
    std_diff: float  # sample standard deviation of the differences
    z: float
    p_value: float  # two-sided normal p-value

    def as_dict(self) -> dict:
        return asdict(self)


def _arrays(errors_a: Sequence[int], errors_b: Sequence[int], words: Sequence[int]):
    a, b, n = (np.asarray(x, dtype=np.int64) for x in (errors_a, errors_b, words))
    if not (a.shape == b.shape == n.shape) or a.ndim != 1:
        raise ValueError(f"per-utterance arrays differ in length: {a.shape}, {b.shape}, {n.shape}")
    if a.size == 0:
        raise ValueError("no utterances to compare")
    return a, b, n


def paired_bootstrap(
    errors_a: Sequence[int],
    errors_b: Sequence[int],
    words: Sequence[int],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk: int = 100,
) -> BootstrapResult:
    """Paired bootstrap over utterances (module docstring); deterministic for a given ``seed``.

    ``words`` = reference words per utterance.  A resample without reference
    words gets WER 0 for both systems (sclite's convention), i.e. delta 0.
    """
    a, b, n = _arrays(errors_a, errors_b, words)
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    total = n.sum()
    delta = 100.0 * float(b.sum() - a.sum()) / total if total else 0.0
    rng = np.random.default_rng(seed)
    diff = b - a
    deltas = np.empty(n_resamples)
    size = a.size
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        # counts[r, i]: how often utterance i is drawn in resample r
        counts = rng.multinomial(size, np.full(size, 1.0 / size), size=k)
        refs = counts @ n
        errs = counts @ diff
        deltas[start:start + k] = np.where(refs > 0, 100.0 * errs / np.maximum(refs, 1), 0.0)
    # tolerance: equal deltas computed along different float paths count as "as extreme"
    extreme = np.abs(deltas - delta) >= abs(delta) - 1e-9
    p_value = float((1 + extreme.sum()) / (1 + n_resamples))
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(deltas, [tail, 1.0 - tail])
    return BootstrapResult(
        n_utterances=int(size),
        n_resamples=n_resamples,
        seed=seed,
        wer_a=100.0 * float(a.sum()) / total if total else 0.0,
        wer_b=100.0 * float(b.sum()) / total if total else 0.0,
        delta=delta,
        ci_low=float(lo),
        ci_high=float(hi),
        confidence=confidence,
        p_value=min(1.0, p_value),
        prob_b_better=float((deltas < 0).mean()),
    )


def matched_pairs_test(errors_a: Sequence[int], errors_b: Sequence[int]) -> MatchedPairsResult:
    """z test of the mean per-utterance error difference (MAPSSWE with utterances as segments).

    Identical error counts everywhere give ``z = 0, p = 1``; a constant
    non-zero difference (zero variance) gives ``z = +-inf, p = 0``.
    """
    a, b, _ = _arrays(errors_a, errors_b, errors_a)
    d = (b - a).astype(float)
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if d.size > 1 else 0.0
    if std > 0:
        z = mean / (std / math.sqrt(d.size))
    else:
        z = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return MatchedPairsResult(int(d.size), mean, std, z, math.erfc(abs(z) / math.sqrt(2.0)))


def compare_utterances(
    utts_a: Sequence[ScoredUtterance], utts_b: Sequence[ScoredUtterance]
) -> tuple[list[int], list[int], list[int]]:
    """``(errors_a, errors_b, words)`` per utterance, after checking that both
    systems scored the same utterances against the same reference words."""
    by_id_b = {u.utt_id: u for u in utts_b}
    if len(by_id_b) != len(utts_a) or any(u.utt_id not in by_id_b for u in utts_a):
        only_a = sorted({u.utt_id for u in utts_a} - set(by_id_b))[:3]
        only_b = sorted(set(by_id_b) - {u.utt_id for u in utts_a})[:3]
        raise ScoringInputError(f"the systems were scored on different utterances (only in A: {only_a}, only in B: {only_b})")
    errors_a, errors_b, words = [], [], []
    for u in utts_a:
        v = by_id_b[u.utt_id]
        if u.ref != v.ref:
            raise ScoringInputError(f"utterance {u.utt_id!r} has different references in the two systems")
        errors_a.append(u.counts.errors)
        errors_b.append(v.counts.errors)
        words.append(u.counts.words)
    return errors_a, errors_b, words
