"""sclite-compatible WER scoring, RESULTS.md tables and significance tests.

Inputs are Kaldi-style ``text`` files (``<utt_id> <words...>``) for the
reference and the hypothesis, plus an optional ``utt2spk`` (without it every
utterance is its own speaker).  A reference utterance without hypothesis is
scored against an empty one (a warning gives the count); a hypothesis
utterance without reference is an error naming the file and the utterance.

Normalisation: reference and hypothesis both go through
:func:`espnet_delta.data.text_norm.normalize_transcript` (its docstring has the
rules), the same function data preparation uses for training targets:

* case: everything upper-cased, so case never counts as an error;
* markup: MyST/LDC spans ``<...>``, ``[...]``, ``((...))``, ``(...)``,
  ``+...+`` are removed with their content;
* fillers (UM, UH, HMM, MM-HMM, ...) and word fragments (``th-``) dropped;
* punctuation removed; hyphenated compounds split (``X-RAY`` -> ``X RAY``);
  apostrophes kept inside words (``DON'T``);
* numbers spelled out as MyST transcribers write them, so a hypothesis with
  digits (Whisper's) is not scored as wrong: integers (``1,250`` -> ``ONE
  THOUSAND TWO HUNDRED FIFTY``), ordinals (``21st``), decimals (``3.5`` ->
  ``THREE POINT FIVE``), ``50%``, ``$5``, plurals (``1970s``), digits glued to
  letters (``CO2`` -> ``CO TWO``); years are read as cardinals, negatives and
  fractions are not handled.

Alignment and counts reproduce sclite (substitution cost 4, insertion and
deletion 3, sclite's tie-breaking; :mod:`espnet_delta.data.word_align`), which is *not* the plain
minimum of S + D + I.  When SCTK is installed the real ``sclite`` runs on the
same ``ref.trn``/``hyp.trn`` and any difference in its Sum counts raises
:class:`SctkMismatchError`.  A set without reference words gets WER 0.0, as
sclite prints it.

Modules: :mod:`.inputs` (reading
and pairing), :mod:`.trn` (ESPnet's trn layout), :mod:`.report`
(``result.txt``), :mod:`.sctk` (sclite / sc_stats), :mod:`.significance`
(paired bootstrap, matched pairs), :mod:`.seeds` (mean, spread and the pooled
bootstrap over training seeds), :mod:`.phones` (PER: phones scored as they
are), :mod:`.results` (``score.json``,
RESULTS.md), :mod:`.scorer` (:func:`score`, the pipeline).
CLI: ``python -m espnet_delta.bin.score``.
"""

from espnet_delta.data.word_align import (
    COST_INS_DEL,
    COST_SUB,
    Counts,
    align_words,
    alignment_ops,
    count_errors,
    counts_from_ops,
)
from .inputs import ScoredUtterance, ScoringInputError, pair_utterances
from .phones import normalize_phones
from .report import format_report, format_summary, speaker_counts, sum_avg_line
from .results import (
    SCORE_JSON,
    ScoreSummary,
    format_results_md,
    load_score,
    wer_numbers,
    write_results_md,
)
from .scorer import score
from .sctk import (
    MapssweResult,
    SctkError,
    SctkMismatchError,
    find_sctk_tool,
    parse_sclite_sum,
    run_mapsswe,
    run_sclite,
)
from .significance import (
    BootstrapResult,
    MatchedPairsResult,
    compare_utterances,
    matched_pairs_test,
    paired_bootstrap,
)
from .trn import format_trn, parse_trn_line, write_trn

__all__ = [
    "COST_INS_DEL",
    "COST_SUB",
    "SCORE_JSON",
    "BootstrapResult",
    "Counts",
    "MapssweResult",
    "MatchedPairsResult",
    "ScoreSummary",
    "ScoredUtterance",
    "ScoringInputError",
    "SctkError",
    "SctkMismatchError",
    "align_words",
    "alignment_ops",
    "compare_utterances",
    "count_errors",
    "counts_from_ops",
    "find_sctk_tool",
    "format_report",
    "format_results_md",
    "format_summary",
    "format_trn",
    "load_score",
    "matched_pairs_test",
    "normalize_phones",
    "pair_utterances",
    "paired_bootstrap",
    "parse_sclite_sum",
    "parse_trn_line",
    "run_mapsswe",
    "run_sclite",
    "score",
    "speaker_counts",
    "sum_avg_line",
    "wer_numbers",
    "write_results_md",
    "write_trn",
]
