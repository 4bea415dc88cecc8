"""Score one system on one test set into a score dir (the whole pipeline)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from espnet_delta.data.text_norm import normalize_transcript
from espnet_delta.fileio import write_text_atomic

from espnet_delta.data.word_align import Counts
from .inputs import pair_utterances
from .report import format_report, speaker_counts, sum_avg_line
from .results import SCORE_JSON, ScoreSummary, write_score_json
from .sctk import SctkError, check_counts, find_sctk_tool, parse_sclite_sum, run_sclite
from .trn import write_trn

__all__ = ["score"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _default_names(ref: Path, out_dir: Path) -> tuple[str, str]:
    """``exp/<system>/decode_<x>/score_wer`` and ``data/<test_set>/text``."""
    parents = out_dir.resolve().parents
    system = parents[1].name if len(parents) > 1 else out_dir.name
    return system, ref.resolve().parent.name


def score(
    ref: PathLike,
    hyp: PathLike,
    out_dir: PathLike,
    utt2spk: PathLike | None = None,
    use_sctk: bool | None = None,
    system: str | None = None,
    test_set: str | None = None,
    normalizer: Callable[[str], str] = normalize_transcript,
) -> ScoreSummary:
    """Score ``hyp`` against ``ref`` (Kaldi ``text`` files) into ``out_dir``.

    Writes ``ref.trn``, ``hyp.trn`` (ESPnet's trn layout), ``result.txt``
    (sclite-like report), with SCTK also ``result.sclite.txt``, and last
    ``score.json``.  ``use_sctk``: ``None`` runs sclite when it is installed,
    ``True`` requires it, ``False`` skips it.  When sclite runs and its Sum
    counts differ from ours, :class:`~.sctk.SctkMismatchError` is raised and
    neither ``result.txt`` nor ``score.json`` is written.

    ``system`` defaults to the name two levels above ``out_dir``
    (``exp/<system>/decode_test/score_wer``), ``test_set`` to the name of the
    reference's directory (``data/<test_set>/text``).
    """
    ref, hyp, out_dir = Path(ref), Path(hyp), Path(out_dir)
    default_system, default_set = _default_names(ref, out_dir)
    system, test_set = system or default_system, test_set or default_set
    utterances = pair_utterances(ref, hyp, utt2spk, normalizer)
    total = sum((u.counts for u in utterances), Counts())

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.txt", "result.sclite.txt", SCORE_JSON):
        (out_dir / stale).unlink(missing_ok=True)
    write_trn(out_dir / "ref.trn", utterances, "ref")
    write_trn(out_dir / "hyp.trn", utterances, "hyp")

    sclite = find_sctk_tool("sclite") if use_sctk is not False else None
    if use_sctk and not sclite:
        raise SctkError("use_sctk=True but sclite is not installed (Debian package sctk)")
    if sclite:
        report = run_sclite(out_dir / "ref.trn", out_dir / "hyp.trn", sclite)
        write_text_atomic(out_dir / "result.sclite.txt", report)
        check_counts(total, parse_sclite_sum(report), out_dir / "result.sclite.txt")
        logger.info("sclite (%s) agrees with the Python scorer: %s", " ".join(sclite), total.as_dict())
    else:
        logger.info("sclite %s; Python scorer only", "skipped" if use_sctk is False else "not installed")

    n_missing = sum(1 for u in utterances if not u.hyp and u.ref)
    header = [
        f"system: {system}    test set: {test_set}",
        f"scored by espnet_delta.scoring: words normalised by {normalizer.__module__}.{normalizer.__qualname__},",
        "aligned like sclite (substitution 4, insertion/deletion 3); "
        + ("counts confirmed by sclite (result.sclite.txt)" if sclite else "sclite not run"),
    ]
    write_text_atomic(out_dir / "result.txt", format_report(utterances, header, title="hyp.trn"))
    summary = ScoreSummary(
        system, test_set, total, bool(sclite), utterances,
        info={"ref": str(ref), "hyp": str(hyp), "utt2spk": None if utt2spk is None else str(utt2spk),
              "sclite": " ".join(sclite) if sclite else None, "empty_hypotheses": n_missing},
        score_dir=out_dir,
    )
    write_score_json(out_dir / SCORE_JSON, summary)
    logger.info("%s / %s: %s", system, test_set, sum_avg_line(speaker_counts(utterances)))
    return summary
