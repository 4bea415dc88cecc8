"""Tables 1-5 of arXiv 2601.20142 ("Mind the Shift: Using Delta SSL Embeddings to
Enhance Child ASR") from scored system dirs, in the paper's shape.

Every number is a test-set WER in percent from ``<exp>/<system>/decode/<test>/score_wer/
score.json`` (written by :func:`espnet_delta.scoring.score`); a ``*`` after a WER marks a
two-sided paired bootstrap p < ``alpha`` (:func:`~.significance.paired_bootstrap` over the
utterances of that test set) against the row that table compares with. Each data size is
its own run (its own fine-tuned models, features and fusion heads), rooted at its own exp
dir; the first size is the full training set.

Each table keeps the paper's rows and columns first, in the paper's order (the full text,
seed 001, holds all five); rows and columns the paper does not have come after them,
marked as added:

* Table 1, fusion methods: one row per size x delta model (HuBERT, W2V2) x method
  (Weighted, X-Attn, Concat), columns FT Embed / Delta Embed / Fusion Method / WER /
  Training Size. Added: the fine-tuned single models of each size, and ``*`` marks against
  fine-tuned WavLM of the same size (the paper's Table 1 marks nothing).
* Table 2, rows WavLM, HuBERT, W2V2 (fine-tuned) and WavLM + ΔHuBERT / ΔW2V2 (Concat),
  columns the sizes; ``*`` on the fusion rows only, against WavLM of the same size.
* Table 3, rows the sizes, columns WavLM + HuBERT / ΔHuBERT / W2V2 / ΔW2V2 (Concat, the
  fine-tuned against the delta embeddings); ``*`` on the delta columns against the
  fine-tuned fusion. Added: the relative WER reduction of each delta fusion per size (in
  ``cells`` mode beside the paper's own, computed from its two cells).
* Table 4, rows WavLM + ΔHuBERT / ΔW2V2 (Concat, full size), columns the deltas of models
  fine-tuned on the child set (MyST) and on adult speech (LibriSpeech). Added: fine-tuned
  WavLM alone, and ``*`` on the adult column against the child one.
* Table 5, two-expert MoE, rows WavLM + ΔHuBERT / ΔW2V2 (full size), columns the mean gate
  weight on WavLM's E_ft and the WER, both on the test set (the paper does not name the set of
  its weights; the project reads it as the set of its WERs): per utterance the weight averaged
  over its valid frames (``<exp>/fusion_<system>/decode/<set>/gate_means.tsv``), then the mean
  (± standard deviation) over the utterances. Added: the weights on the other gate sets and
  ``*`` against fine-tuned WavLM.

The paper's numbers (:mod:`.paper_numbers`) are shown as :meth:`PaperTable.markdown`'s
``compare`` says: ``cells``, the published value and the difference (run minus paper) beside
every cell of the paper's rows; ``once``, the published table once below the run's, marked as
not comparable (another corpus and other models: the mini recipes); ``none``. ``auto``
(:func:`resolve_compare`) is ``cells`` when every size is one of the paper's, else ``once``.

System names (the recipe's ``exp/<system>`` dirs): ``ft_<model>`` for fine-tuned models,
``fusion_wavlm+d<short>_<method>`` (delta), ``fusion_wavlm+<short>_<method>_full``
(fine-tuned embeddings), ``fusion_wavlm+d<short>_adult_<method>`` (adult deltas), with
``<short>`` ``hubert`` or ``w2v2``; the recipes' ``conf/paper`` (mini_myst) and
``conf/tuning/paper`` (myst) systems files define the same names.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import paper_numbers as paper
from .inputs import ScoringInputError
from .paper_layout import COMPARE_MODES, Cell, Column, PaperTable, Row, SizeRoot, resolve_compare
from .results import ScoreSummary, load_score
from .significance import compare_utterances, paired_bootstrap

__all__ = ["COMPARE_MODES", "GATE_MEANS_FILE", "OTHERS", "Cell", "Column", "PaperTable", "Row", "ScoreBook",
           "SizeRoot", "TABLES", "build_table", "delta_system", "full_system", "read_gate_means", "resolve_compare",
           "score_dir"]

logger = logging.getLogger(__name__)

REFERENCE = "wavlm"
REFERENCE_LABEL = "WavLM"
#: (model name in conf/upstreams.yaml, label, short name in system names)
OTHERS: Tuple[Tuple[str, str, str], ...] = (("hubert", "HuBERT", "hubert"), ("wav2vec2", "W2V2", "w2v2"))
#: fusion methods in the paper's Table 1 order
METHODS: Tuple[Tuple[str, str], ...] = (("weighted", "Weighted"), ("xattn", "X-Attn"), ("concat", "Concat"))
GATE_MEANS_FILE = "gate_means.tsv"  # the name espnet_delta.analysis.gates writes
MISSING = "–"  # a cell whose score dir (or gate file) does not exist yet
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
             run: str = MAIN_RUN, compare_run: str = MAIN_RUN) -> Cell:
        """``"12.34"``, ``"12.34*"`` (significant against ``compare``) or ``MISSING``."""
        summary = self.get(size, system, test_set, run)
        base = self.get(size, compare, test_set, compare_run) if compare else None
        if summary is None:
            return Cell(MISSING)
        mark = "*" if base is not None and self.p_value(base, summary) < self.alpha else ""
        return Cell(f"{summary.wer:.2f}{mark}", summary.wer)

    def significance_note(self, marked: str, against: str) -> str:
        return (f"`*` ({marked}): p < {self.alpha:g} against {against}, two-sided paired bootstrap over the "
                f"utterances ({self.n_resamples} resamples, seed {self.seed}; `espnet_delta/scoring/significance.py`).")


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


def _gate_cell(book: ScoreBook, size: SizeRoot, system: str, gate_set: str) -> Cell:
    path = Path(size.exp_dir) / system / "decode" / gate_set / GATE_MEANS_FILE
    if not path.is_file():
        book.missing.append((size.label, MAIN_RUN, path))
        return Cell(MISSING)
    names, _, weights = read_gate_means(path)
    if REFERENCE not in names:
        raise ScoringInputError(f"{path}: no column {REFERENCE!r} (the reference) among experts {names}")
    mean, sd = _mean_sd([w[names.index(REFERENCE)] for w in weights])
    return Cell(f"{mean:.3f} ± {sd:.3f}", mean)


# ------------------------------------------------------------------ the tables

SINGLE_MODELS = ((REFERENCE, REFERENCE_LABEL, "wavlm"), *((m, lab, s) for m, lab, s in OTHERS))


def table1(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, **_) -> PaperTable:
    t = PaperTable(1, f"WERs for fusing fine-tuned WavLM with ΔHuBERT or ΔW2V2, by fusion method and training "
                      f"size ({test_set})",
                   [Column("FT Embed", number=False), Column("Delta Embed", number=False),
                    Column("Fusion Method", number=False), Column("WER", compared=True),
                    Column("Training Size", number=False)])
    ref = ft_system(REFERENCE)
    for s in sizes:
        for _, label, short in OTHERS:
            for method, method_label in METHODS:
                wer = book.cell(s, delta_system(short, method), test_set, ref).with_paper(
                    paper.TABLE1, (short, method, s.paper))
                t.rows.append(Row([Cell(REFERENCE_LABEL), Cell(f"Δ{label}"), Cell(method_label), wer, Cell(s.label)]))
    for s in sizes:
        for model, label, _ in SINGLE_MODELS:
            t.rows.append(Row([Cell(label), Cell(""), Cell("none (fine-tuned model alone)"),
                               book.cell(s, ft_system(model), test_set), Cell(s.label)], added=True))
    t.notes.append(book.significance_note("added; the paper's Table 1 marks nothing",
                                          f"{REFERENCE_LABEL} fine-tuned on the same training size"))
    return t


def table2(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, **_) -> PaperTable:
    t = PaperTable(2, f"WERs (%) for fine-tuned SSL models and delta embedding fusion (Concat) ({test_set})",
                   [Column("Model", number=False), *(Column(s.label, compared=True) for s in sizes)])
    ref = ft_system(REFERENCE)
    for model, label, key in SINGLE_MODELS:
        t.rows.append(Row([Cell(label)] + [book.cell(s, ft_system(model), test_set).with_paper(
            paper.TABLE2, (key, s.paper)) for s in sizes]))
    for _, label, short in OTHERS:
        key = f"wavlm+d{short}"
        t.rows.append(Row([Cell(f"{REFERENCE_LABEL} + Δ{label}")] + [
            book.cell(s, delta_system(short, "concat"), test_set, ref).with_paper(
                paper.TABLE2, (key, s.paper), paper.TABLE2_SIGNIFICANT) for s in sizes]))
    t.notes.append(book.significance_note("fusion rows only", f"{REFERENCE_LABEL} fine-tuned on the same training size"))
    return t


def table3(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, **_) -> PaperTable:
    columns = [Column("Data", number=False)]
    for _, label, _ in OTHERS:
        columns += [Column(label, compared=True), Column(f"Δ{label}", compared=True)]
    t = PaperTable(3, f"WERs (%) when fusing WavLM with HuBERT/W2V2 versus their Δ counterparts (Concat) "
                      f"({test_set})", columns)
    reductions = []
    for s in sizes:
        cells, red = [Cell(s.label)], [Cell(f"relative WER reduction of Δ, {s.label} (%)")]
        for _, _, short in OTHERS:
            ft, delta = full_system(short, "concat"), delta_system(short, "concat")
            a = book.cell(s, ft, test_set).with_paper(paper.TABLE3, (s.paper, f"wavlm+{short}"))
            b = book.cell(s, delta, test_set, ft).with_paper(paper.TABLE3, (s.paper, f"wavlm+d{short}"),
                                                              paper.TABLE3_SIGNIFICANT)
            cells += [a, b]
            rel = Cell(MISSING)
            if a.value and b.value is not None:
                rel = Cell(f"{100.0 * (a.value - b.value) / a.value:.1f}", 100.0 * (a.value - b.value) / a.value)
            if a.paper and b.paper is not None:  # the paper's own reduction, from its two cells
                rel.paper = 100.0 * (a.paper - b.paper) / a.paper
            red += [Cell(""), rel]
        t.rows.append(Row(cells))
        reductions.append(Row(red, added=True))
    t.rows += reductions
    t.notes.append("Relative WER reduction: 100 (WER fine-tuned fusion − WER Δ fusion) / WER fine-tuned fusion.")
    t.notes.append(book.significance_note("Δ columns", "the fine-tuned fusion of the same model and size"))
    return t


def table4(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, child_label: str = "MyST",
           adult_label: str = "LibriSpeech", **_) -> PaperTable:
    full = sizes[0]
    t = PaperTable(4, f"WERs (%) for fusion of fine-tuned WavLM ({child_label}) with Δ embeddings from models "
                      f"fine-tuned on {child_label} vs. {adult_label} ({full.label} training size, {test_set})",
                   [Column("Fusion (WavLM + Δ)", number=False), Column(child_label, compared=True),
                    Column(adult_label, compared=True)])
    for _, label, short in OTHERS:
        child, adult = delta_system(short, "concat"), delta_system(short, "concat", "adult")
        # the paper's cells are of its full size only
        t.rows.append(Row([Cell(label),
                           book.cell(full, child, test_set).with_paper(paper.TABLE4, (short, "child", full.paper)),
                           book.cell(full, adult, test_set, child, run=ADULT_RUN).with_paper(
                               paper.TABLE4, (short, "adult", full.paper))]))
    t.rows.append(Row([Cell(f"none ({REFERENCE_LABEL} fine-tuned alone)"),
                       book.cell(full, ft_system(REFERENCE), test_set), Cell("")], added=True))
    t.notes.append(f"{REFERENCE_LABEL} is fine-tuned on {child_label} in every row. "
                   + book.significance_note(f"{adult_label} column, added",
                                            f"the {child_label}-delta fusion of the same model"))
    return t


def table5(book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str, gate_sets: Sequence[str] = (), **_) -> PaperTable:
    full = sizes[0]
    others = [g for g in dict.fromkeys(gate_sets) if g != test_set]
    t = PaperTable(5, f"WERs (%) for MoE results: mean MoE weight on the WavLM embedding w_ft and WER "
                      f"({full.label} training size, {test_set})",
                   [Column("Fusion Model", number=False), Column(f"w_ft ({test_set})", compared=True, digits=3),
                    Column("WER", compared=True), *(Column(f"w_ft ({g}, added)", digits=3) for g in others)])
    for _, label, short in OTHERS:
        system = delta_system(short, "moe")
        t.rows.append(Row([Cell(f"{REFERENCE_LABEL} + Δ{label}"),
                           _gate_cell(book, full, system, test_set).with_paper(paper.TABLE5, (short, "w_ft", full.paper)),
                           book.cell(full, system, test_set, ft_system(REFERENCE)).with_paper(
                               paper.TABLE5, (short, "wer", full.paper)),
                           *(_gate_cell(book, full, system, g) for g in others)]))
    t.notes.append("w_ft: per utterance the gate's weight on WavLM's fine-tuned stream averaged over the valid "
                   "frames, then mean ± standard deviation over the utterances of the set. "
                   + book.significance_note("added", f"{REFERENCE_LABEL} fine-tuned"))
    return t


TABLES: Mapping[int, Callable[..., PaperTable]] = {1: table1, 2: table2, 3: table3, 4: table4, 5: table5}


def build_table(number: int, book: ScoreBook, sizes: Sequence[SizeRoot], test_set: str = "test",
                gate_sets: Sequence[str] = (), **labels: str) -> PaperTable:
    """Build Table ``number``; ``sizes[0]`` is the full training set. What was not found is
    in ``table.missing`` (and shown as ``MISSING``)."""
    if number not in TABLES:
        raise ValueError(f"no Table {number} in arXiv 2601.20142 (tables: {sorted(TABLES)})")
    if not sizes:
        raise ValueError("at least one data size (the full training set) is needed")
    start = len(book.missing)
    table = TABLES[number](book, sizes, test_set=test_set, gate_sets=gate_sets, **labels)
    table.missing = list(dict.fromkeys(book.missing[start:]))
    if table.missing:
        table.notes.append(f"{MISSING}: not scored yet ({len(table.missing)} score dirs or gate files missing; "
                           "`python -m espnet_delta.bin.paper_tables --list_missing` lists them).")
        logger.warning("Table %d: %d score dirs or gate files missing, e.g. %s", number, len(table.missing),
                       table.missing[0][2])
    return table
