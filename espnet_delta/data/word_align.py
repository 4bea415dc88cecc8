"""Word alignment that reproduces sclite's, and the error counts it yields.

It lives in data/ because two rooms count word errors and must count them alike: data
preparation screens utterances by their Whisper WER (:mod:`.screen`), and scoring
(:mod:`espnet_delta.scoring`) writes the reported WERs; data/ sits below both.

sclite does *not* minimise S + D + I.  Its default word-to-word distance
(``wwd_WORD`` in SCTK's ``word.c``) costs 0 for a match, 3 for an insertion or
a deletion and 4 for a substitution, and its dynamic programme
(``net_dp.c``) minimises that weighted cost.  The two criteria can disagree:
for ref ``A B C X Y`` / hyp ``P Q R A B`` plain Levenshtein finds 5
substitutions (5 errors) while sclite keeps the two matches and reports
3 insertions + 3 deletions (6 errors, cost 18 < 20).  ESPnet's RESULTS.md
numbers come from sclite, so we use sclite's costs, and
the scoring tests check the counts against the real sclite.

Ties between equal-cost predecessors are broken as sclite breaks them, per
cell (ref position ``i``, hyp position ``j``):

1. the diagonal step (match or substitution) when its cost is ``<=`` both
   the deletion and the insertion cost;
2. otherwise the deletion when it is strictly cheaper than the insertion;
3. otherwise the insertion.

The backtrace starts at the end of both word sequences, so for ref ``A B`` /
hyp ``C`` the result is ``A`` deleted and ``B -> C`` substituted (``D S``),
as sclite prints it.  Words are compared as exact strings: both sides are
normalised (upper-cased) before alignment, where sclite would compare them
case-insensitively.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Sequence

__all__ = [
    "COST_INS_DEL",
    "COST_SUB",
    "Counts",
    "Op",
    "align_words",
    "alignment_ops",
    "count_errors",
    "counts_from_ops",
    "steps_from_ops",
]

#: sclite's default costs (SCTK ``word.c``: correct 0, insertion/deletion 3, substitution 4).
COST_SUB = 4
COST_INS_DEL = 3

#: An alignment step: ``"C"`` correct, ``"S"`` substitution, ``"D"`` deletion, ``"I"`` insertion.
Op = Literal["C", "S", "D", "I"]

# Back pointers of the dynamic programme.
_DIAG, _DEL, _INS = 0, 1, 2


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[Op, str | None, str | None]]:
    """Align two word sequences the way sclite does (module docstring).

    Returns the steps in order as ``(op, ref_word, hyp_word)``; the word of
    the missing side is ``None`` for deletions and insertions.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j]: cheapest alignment of ref[:i] with hyp[:j]; back[i][j]: its last step.
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    back = [[_DIAG] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        cost[0][j] = cost[0][j - 1] + COST_INS_DEL
        back[0][j] = _INS
    for i in range(1, n + 1):
        cost[i][0] = cost[i - 1][0] + COST_INS_DEL
        back[i][0] = _DEL
        word, row, prev, brow = ref[i - 1], cost[i], cost[i - 1], back[i]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (0 if word == hyp[j - 1] else COST_SUB)
            dele = prev[j] + COST_INS_DEL
            ins = row[j - 1] + COST_INS_DEL
            if diag <= dele and diag <= ins:
                row[j], brow[j] = diag, _DIAG
            elif dele < ins:
                row[j], brow[j] = dele, _DEL
            else:
                row[j], brow[j] = ins, _INS

    steps: list[tuple[Op, str | None, str | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        step = back[i][j]
        if step == _DIAG:
            steps.append(("C" if ref[i - 1] == hyp[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif step == _DEL:
            steps.append(("D", ref[i - 1], None))
            i -= 1
        else:
            steps.append(("I", None, hyp[j - 1]))
            j -= 1
    steps.reverse()
    return steps


@dataclass(frozen=True)
class Counts:
    """sclite's counts for one utterance or a sum over utterances.

    ``sentences``/``words`` are sclite's ``# Snt``/``# Wrd`` (reference words);
    ``sentence_errors`` counts sentences with at least one error (``S.Err``).
    """

    sentences: int = 0
    words: int = 0
    correct: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def __add__(self, other: "Counts") -> "Counts":
        if not isinstance(other, Counts):
            return NotImplemented
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Counts)))

    def percent(self, value: int) -> float:
        """``100 * value / words``; 0.0 when there are no reference words (sclite's Sum/Avg convention)."""
        return 100.0 * value / self.words if self.words else 0.0

    @property
    def wer(self) -> float:
        """Word error rate in percent (sclite's ``Err``); 0.0 when ``words == 0``, as sclite prints it."""
        return self.percent(self.errors)

    @property
    def ser(self) -> float:
        """Sentence error rate in percent (sclite's ``S.Err``); 0.0 without sentences."""
        return 100.0 * self.sentence_errors / self.sentences if self.sentences else 0.0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(Counts)}


def alignment_ops(ref: Sequence[str], hyp: Sequence[str]) -> str:
    """The alignment of :func:`align_words` as a string of ops, e.g. ``"CCSDI"``."""
    return "".join(op for op, _, _ in align_words(ref, hyp))


def counts_from_ops(ops: str) -> Counts:
    """Counts of one utterance (one sentence) from its alignment ops."""
    c, s, d, i = (ops.count(op) for op in "CSDI")
    if c + s + d + i != len(ops):
        raise ValueError(f"alignment ops must be C, S, D or I: {ops!r}")
    return Counts(1, c + s + d, c, s, d, i, int(s + d + i > 0))


def steps_from_ops(ops: str, ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[Op, str | None, str | None]]:
    """Rebuild :func:`align_words`' steps from the ops and the two word sequences."""
    steps: list[tuple[Op, str | None, str | None]] = []
    i = j = 0
    for op in ops:
        if op in "CS":
            steps.append((op, ref[i], hyp[j]))  # type: ignore[arg-type]
            i, j = i + 1, j + 1
        elif op == "D":
            steps.append(("D", ref[i], None))
            i += 1
        else:
            steps.append(("I", None, hyp[j]))
            j += 1
    if i != len(ref) or j != len(hyp):
        raise ValueError(f"alignment ops {ops!r} do not cover {len(ref)} reference and {len(hyp)} hypothesis words")
    return steps


def count_errors(ref: Sequence[str], hyp: Sequence[str]) -> Counts:
    """Counts of one utterance (one sentence) from :func:`align_words`."""
    return counts_from_ops(alignment_ops(ref, hyp))
