"""Tables 1-5 of arXiv 2601.20142 ("Mind the Shift: Using Delta SSL Embeddings to
Enhance Child ASR") from scored system dirs.

Every number is a test-set WER in percent from ``<exp>/<system>/decode/<test>/score_wer/
score.json`` (written by :func:`espnet_delta.scoring.score`); a ``*`` after a WER marks a
two-sided paired bootstrap p < ``alpha`` (:func:`~.significance.paired_bootstrap` over the
utterances of that test set, :func:`~.significance.compare_utterances` checks that both
systems scored the same utterances) against the row that table compares with. Each data
size is its own run (its own fine-tuned models, features and fusion heads), rooted at
its own exp dir; the first size is the full training set.

The paper's tables as this module builds them (our reading of the paper; only the
abstract and introduction of the stored copy could be read, so the layout of Tables 2, 4
and 5 follows the paper's text and the issue's description, not a copy of the tables):

* Table 1, fusion methods by training-data size: rows are the fine-tuned single models
  (WavLM, HuBERT, W2V2), then WavLM + delta HuBERT and WavLM + delta W2V2, each fused by
  weighted sum, concatenation and cross-attention; columns are the sizes (full, 10 h, 5 h,
  1 h at paper scale). Fusion rows are tested against fine-tuned WavLM of the same size.
* Table 2, the best delta fusion against the fine-tuned single models, full training set:
  rows are WavLM, HuBERT and W2V2 fine-tuned and, per delta model, the fusion method with
  the lowest dev WER (named in the row); one test-WER column; tested against WavLM.
  (Rows of other papers that the paper quotes are not regenerated.)
* Table 3, delta against fine-tuned embeddings: per other model, WavLM fused (concat) with
  its fine-tuned embeddings E_ft and with its delta E_ft - E_pt; columns are the sizes;
  each delta row is tested against the fine-tuned (full) fusion of the same size, and the
  relative WER reduction is listed under the table.
* Table 4, deltas of models fine-tuned on adult speech, full training set: WavLM
  (fine-tuned on the child set) + delta HuBERT / delta W2V2 with the deltas of models
  fine-tuned on the child set and on LibriSpeech (the adult set); one test-WER column; each
  adult-delta row is tested against the child-delta fusion of the same model.
* Table 5, two-expert mixture of experts, full training set: WavLM + delta HuBERT and
  WavLM + delta W2V2 fused by a frame-wise gate; columns are the test WER (tested against
  fine-tuned WavLM) and, per scored set, the gate weight on WavLM's fine-tuned stream:
  the mean over utterances (and its standard deviation) of each utterance's mean weight
  over its valid frames, read from ``<exp>/fusion_<system>/decode/<set>/gate_means.tsv``.

System names (the recipe's ``exp/<system>`` dirs): ``ft_<model>`` for fine-tuned models,
``fusion_wavlm+d<short>_<method>`` (delta), ``fusion_wavlm+<short>_<method>_full``
(fine-tuned embeddings), ``fusion_wavlm+d<short>_adult_<method>`` (adult deltas), with
``<short>`` ``hubert`` or ``w2v2``; the recipes' ``conf/paper`` (mini_myst) and
``conf/tuning/paper`` (myst) systems files define the same names.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .inputs import ScoringInputError
from .results import ScoreSummary, load_score
from .significance import compare_utterances, paired_bootstrap

__all__ = ["GATE_MEANS_FILE", "OTHERS", "PaperTable", "ScoreBook", "SizeRoot", "TABLES", "build_table",
           "delta_system", "full_system", "read_gate_means", "score_dir"]

logger = logging.getLogger(__name__)

REFERENCE = "wavlm"
REFERENCE_LABEL = "WavLM"
#: (model name in conf/upstreams.yaml, label, short name in system names)
OTHERS: Tuple[Tuple[str, str, str], ...] = (("hubert", "HuBERT", "hubert"), ("wav2vec2", "W2V2", "w2v2"))
METHODS: Tuple[Tuple[str, str], ...] = (("weighted", "weighted sum"), ("concat", "concat"),
                                        ("xattn", "cross-attention"))
GATE_MEANS_FILE = "gate_means.tsv"  # the name espnet_delta.analysis.gates writes
MISSING = "–"  # a cell whose score dir (or gate file) does not exist yet
NONE = ""  # a cell that does not apply (no fusion for a single model)
#: runs a missing file belongs to: the size's main run, or the run on adult-speech deltas
MAIN_RUN, ADULT_RUN = "main", "adult"


def ft_system(model: str) -> str:
    return f"ft_{model}"


def delta_system(short: str, method: str, source: str = "") -> str:
    return f"fusion_{REFERENCE}+d{short}{'_' + source if source else ''}_{method}"


def full_system(short: str, method: str) -> str:
    return f"fusion_{REFERENCE}+{short}_{method}_full"


def score_dir(exp_dir: Path, system: str, test_set: str) -> Path:
    return Path(exp_dir) / system / "decode" / test_set / "score_wer"


@dataclass(frozen=True)
class SizeRoot:
    """One training-data size: its column label and the exp dir of its run."""

    label: str
    exp_dir: Path


@dataclass
class PaperTable:
    """A built table: ``rows`` are lists of cell strings under ``header``."""

    number: int
    title: str
    header: List[str]
    rows: List[List[str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    missing: List[Tuple[str, str, Path]] = field(default_factory=list)  # (size label, run, path)

    @property
    def heading(self) -> str:
        return f"## Table {self.number}: {self.title}"

    def markdown(self) -> str:
        align = ["---"] * 2 + ["---:"] * (len(self.header) - 2)
        lines = [self.heading, "", "|" + "|".join(self.header) + "|", "|" + "|".join(align) + "|"]
        lines += ["|" + "|".join(row) + "|" for row in self.rows]
        for note in self.notes:
            lines += ["", note]
        return "\n".join(lines) + "\n"


class ScoreBook:
    """Loads each ``score.json`` once; logs what is missing (``missing``, in the order asked,
    repeats included) instead of failing."""

    def __init__(self, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> None:
        self.n_resamples, self.seed, self.alpha = n_resamples, seed, alpha
        self._cache: Dict[Path, Optional[ScoreSummary]] = {}
        self.missing: List[Tuple[str, str, Path]] = []

    def get(self, size: SizeRoot, system: str, test_set: str, run: str = MAIN_RUN) -> Optional[ScoreSummary]:
        path = score_dir(size.exp_dir, system, test_set)
        if path not in self._cache:
            json_file = path / "score.json"
            self._cache[path] = load_score(path) if json_file.is_file() else None
        if self._cache[path] is None:
            self.missing.append((size.label, run, path))
        return self._cache[path]

    def p_value(self, base: ScoreSummary, other: ScoreSummary) -> float:
        try:
            errors_a, errors_b, words = compare_utterances(base.utterances, other.utterances)
        except ScoringInputError as e:
            raise ScoringInputError(f"{base.score_dir} vs {other.score_dir}: {e}") from e
        return paired_bootstrap(errors_a, errors_b, words, n_resamples=self.n_resamples, seed=self.seed).p_value

    def cell(self, size: SizeRoot, system: str, test_set: str, compare: Optional[str] = None,
             run: str = MAIN_RUN, compare_run: str = MAIN_RUN) -> str:
        """``"12.34"``, ``"12.34*"`` (significant against ``compare``) or ``MISSING``."""
        summary = self.get(size, system, test_set, run)
        base = self.get(size, compare, test_set, compare_run) if compare else None
        if summary is None:
            return MISSING
        mark = "*" if base is not None and self.p_value(base, summary) < self.alpha else ""
        return f"{summary.wer:.2f}{mark}"

    def wer(self, size: SizeRoot, system: str, test_set: str, run: str = MAIN_RUN) -> Optional[float]:
        summary = self.get(size, system, test_set, run)
        return None if summary is None else summary.wer

    def significance_note(self, against: str) -> str:
        return (f"`*`: p < {self.alpha:g} against {against}, two-sided paired bootstrap over the utterances "
                f"({self.n_resamples} resamples, seed {self.seed}; `espnet_delta/scoring/significance.py`).")


def read_gate_means(path: Path) -> Tuple[List[str], List[str], List[List[float]]]:
    """``(expert names, utterance ids, per-utterance mean weights)`` of a ``gate_means.tsv``
    (header ``utt_id<TAB><expert names...>``, one row of weights per utterance)."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or lines[0].split("\t")[0] != "utt_id" or len(lines[0].split("\t")) < 2:
        raise ScoringInputError(f"{path}: expected a header 'utt_id<TAB><expert names...>'")
    names = lines[0].split("\t")[1:]
    utts, rows = [], []
    for k, line in enumerate(lines[1:], start=2):
        cols = line.split("\t")
        try:
            if len(cols) != len(names) + 1:
                raise ValueError(f"{len(cols) - 1} weights for {len(names)} experts")
            rows.append([float(v) for v in cols[1:]])
        except ValueError as e:
            raise ScoringInputError(f"{path}:{k}: {e}") from e
        utts.append(cols[0])
    if not rows:
        raise ScoringInputError(f"{path}: no utterances")
    return names, utts, rows


def _mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


# ------------------------------------------------------------------ the tables


def table1(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, **_) -> PaperTable:
    t = PaperTable(1, f"WER (%) of delta-embedding fusion by fusion method and training data ({test_set})",
                   ["Model", "Fusion", *(s.label for s in sizes)])
    ref = ft_system(REFERENCE)
    for model, label in ((REFERENCE, REFERENCE_LABEL), *((m, lab) for m, lab, _ in OTHERS)):
        t.rows.append([f"{label} (fine-tuned)", NONE] + [book.cell(s, ft_system(model), test_set) for s in sizes])
    for _, label, short in OTHERS:
        for method, method_label in METHODS:
            t.rows.append([f"{REFERENCE_LABEL} + Δ{label}", method_label]
                          + [book.cell(s, delta_system(short, method), test_set, ref) for s in sizes])
    t.notes.append(book.significance_note(f"{REFERENCE_LABEL} (fine-tuned) trained on the same data"))
    return t


def table2(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, valid_set: str, **_) -> PaperTable:
    full = sizes[0]
    t = PaperTable(2, f"WER (%) of the best delta fusion and the fine-tuned models, {full.label} training data",
                   ["Model", "Fusion", f"WER ({test_set})"])
    ref = ft_system(REFERENCE)
    for model, label in ((REFERENCE, REFERENCE_LABEL), *((m, lab) for m, lab, _ in OTHERS)):
        t.rows.append([f"{label} (fine-tuned)", NONE, book.cell(full, ft_system(model), test_set,
                                                                   None if model == REFERENCE else ref)])
    for _, label, short in OTHERS:
        dev = {method: book.wer(full, delta_system(short, method), valid_set) for method, _ in METHODS}
        scored = [(w, k) for k, (method, _) in enumerate(METHODS) if (w := dev[method]) is not None]
        if len(scored) < len(METHODS):  # every method must be scored on dev before one is picked
            t.rows.append([f"{REFERENCE_LABEL} + Δ{label}", MISSING, MISSING])
            continue
        method, method_label = METHODS[min(scored)[1]]
        t.rows.append([f"{REFERENCE_LABEL} + Δ{label}", method_label,
                       book.cell(full, delta_system(short, method), test_set, ref)])
    t.notes.append(f"Fusion: the method of Table 1 with the lowest WER on {valid_set} (ties: the first of "
                   + ", ".join(m for _, m in METHODS) + "). " + book.significance_note(f"{REFERENCE_LABEL} (fine-tuned)"))
    return t


def table3(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, **_) -> PaperTable:
    t = PaperTable(3, f"WER (%) of fusion with delta against fine-tuned embeddings (concat, {test_set})",
                   ["Model", "Embeddings", *(s.label for s in sizes)])
    reductions = []
    for _, label, short in OTHERS:
        ft, delta = full_system(short, "concat"), delta_system(short, "concat")
        t.rows.append([f"{REFERENCE_LABEL} + {label}", "fine-tuned (E_ft)"] + [book.cell(s, ft, test_set) for s in sizes])
        t.rows.append([f"{REFERENCE_LABEL} + Δ{label}", "delta (E_ft − E_pt)"]
                      + [book.cell(s, delta, test_set, ft) for s in sizes])
        rel = []
        for s in sizes:
            a, b = book.wer(s, ft, test_set), book.wer(s, delta, test_set)
            rel.append(f"{s.label} {100.0 * (a - b) / a:.1f} %" if a and b is not None else f"{s.label} {MISSING}")
        reductions.append(f"{label}: " + ", ".join(rel))
    t.notes.append("Relative WER reduction of the delta over the fine-tuned fusion: " + "; ".join(reductions) + ".")
    t.notes.append(book.significance_note("the fine-tuned (full) fusion of the same model and data"))
    return t


def table4(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, child_label: str = "MyST",
           adult_label: str = "LibriSpeech", **_) -> PaperTable:
    full = sizes[0]
    t = PaperTable(4, f"WER (%) with deltas of models fine-tuned on child or adult speech (concat, "
                      f"{full.label} training data)", ["Model", "Deltas fine-tuned on", f"WER ({test_set})"])
    t.rows.append([f"{REFERENCE_LABEL} (fine-tuned)", NONE, book.cell(full, ft_system(REFERENCE), test_set)])
    for _, label, short in OTHERS:
        child, adult = delta_system(short, "concat"), delta_system(short, "concat", "adult")
        t.rows.append([f"{REFERENCE_LABEL} + Δ{label}", f"{child_label} (child)", book.cell(full, child, test_set)])
        t.rows.append([f"{REFERENCE_LABEL} + Δ{label}", f"{adult_label} (adult)",
                       book.cell(full, adult, test_set, child, run=ADULT_RUN)])
    t.notes.append(f"{REFERENCE_LABEL} is fine-tuned on the child set in every row. "
                   + book.significance_note("the child-delta fusion of the same model"))
    return t


def table5(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, gate_sets: Sequence[str] = (), **_) -> PaperTable:
    full = sizes[0]
    gate_sets = list(gate_sets) or [test_set]
    t = PaperTable(5, f"Two-expert mixture of experts: WER (%) and gate weight on {REFERENCE_LABEL}'s fine-tuned "
                      f"stream, {full.label} training data",
                   ["Model", "Fusion", f"WER ({test_set})", *(f"weight on {REFERENCE_LABEL} E_ft ({g})" for g in gate_sets)])
    for _, label, short in OTHERS:
        system = delta_system(short, "moe")
        row = [f"{REFERENCE_LABEL} + Δ{label}", "MoE", book.cell(full, system, test_set, ft_system(REFERENCE))]
        for g in gate_sets:
            path = Path(full.exp_dir) / system / "decode" / g / GATE_MEANS_FILE
            if not path.is_file():
                book.missing.append((full.label, MAIN_RUN, path))
                row.append(MISSING)
                continue
            names, _, weights = read_gate_means(path)
            if REFERENCE not in names:
                raise ScoringInputError(f"{path}: no column {REFERENCE!r} (the reference) among experts {names}")
            mean, sd = _mean_sd([w[names.index(REFERENCE)] for w in weights])
            row.append(f"{mean:.3f} ± {sd:.3f}")
        t.rows.append(row)
    t.notes.append("Weight: per utterance the gate's weight on the reference stream averaged over the valid "
                   "frames, then mean ± standard deviation over the utterances of the set. "
                   + book.significance_note(f"{REFERENCE_LABEL} (fine-tuned)"))
    return t


TABLES: Mapping[int, Callable[..., PaperTable]] = {1: table1, 2: table2, 3: table3, 4: table4, 5: table5}


def build_table(number: int, book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str = "test",
                valid_set: str = "dev", gate_sets: Sequence[str] = (), **labels: str) -> PaperTable:
    """Build Table ``number``; ``sizes[0]`` is the full training set. What was not found is
    in ``table.missing`` (and shown as ``MISSING``)."""
    if number not in TABLES:
        raise ValueError(f"no Table {number} in arXiv 2601.20142 (tables: {sorted(TABLES)})")
    if not sizes:
        raise ValueError("at least one data size (the full training set) is needed")
    start = len(book.missing)
    table = TABLES[number](book, sizes, test_set=test_set, valid_set=valid_set, gate_sets=gate_sets, **labels)
    table.missing = list(dict.fromkeys(book.missing[start:]))
    if table.missing:
        table.notes.append(f"{MISSING}: not scored yet ({len(table.missing)} score dirs or gate files missing; "
                           "`python -m espnet_delta.bin.paper_tables --list_missing` lists them).")
        logger.warning("Table %d: %d score dirs or gate files missing, e.g. %s", number, len(table.missing),
                       table.missing[0][2])
    return table
