"""Data preparation entry point: corpora -> Kaldi data dirs + summary.

Output under ``out_dir``::

    train/ dev/ test/                  MyST (train, development, test)
    libri_train/ libri_dev/ libri_test/  LibriSpeech, when given
    train_1h/ train_5h/ train_10h/     nested subsets of train (names from the sizes)
    audio_16k/<split>/                 resampled copies of non-16 kHz input, if any
    prep_summary.tsv                   the summary table

MyST protocol of the papers: drop utterances longer than ``max_duration``
(30 s), with fewer than ``min_words`` (3) words after cleaning, or -- when a
Whisper hypothesis file is given -- with WER > ``max_wer`` (50 %).  The test
set is filtered with the same rules by default so that WERs are comparable
with the published numbers; ``keep_long_test`` keeps its long utterances.
LibriSpeech only gets the duration filter (it is read speech with reliable
transcripts; its short utterances are real speech).  Both corpora drop training
and dev utterances whose audio is too short for a CTC alignment of their
transcript; test sets keep them and the summary lists them (:mod:`.screen`).

Nothing is ever written under a corpus root.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .kaldi_dir import Utterance, write_data_dir
from .librispeech import LIBRISPEECH_SPLITS, iter_librispeech_candidates
from .myst import MYST_SPLITS, find_myst_data_dir, iter_myst_candidates, read_whisper_hyps
from .report import SplitStats, write_summary_tsv
from .screen import Candidate, ScreenConfig, screen, unique_candidates
from .subsets import nested_subsets, subset_name

__all__ = ["PrepConfig", "SUMMARY_NAME", "prepare_data"]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "prep_summary.tsv"
#: Output splits scored, never trained or selected on: they keep every utterance CTC cannot align.
TEST_SETS = ("test", "libri_test")


@dataclass(frozen=True)
class PrepConfig:
    """Options of :func:`prepare_data` (CLI flags of the same names)."""

    max_duration: float = 30.0
    min_words: int = 3
    max_wer: float = 0.5
    keep_long_test: bool = False
    subset_hours: tuple[float, ...] = (1.0, 5.0, 10.0)
    seed: int = 0
    decode_audio: bool = False


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _prepare_split(
    name: str,
    candidates: Iterable[Candidate],
    cfg: ScreenConfig,
    out_dir: Path,
    hyps: dict[str, str] | None = None,
) -> tuple[list[Utterance], SplitStats]:
    """Screen the candidates of one split and write its data dir."""
    stats = SplitStats(name)
    kept = [
        u
        for cand in tqdm(unique_candidates(candidates, stats), desc=f"prep {name}", unit="utt", leave=False)
        if (u := screen(cand, cfg, stats, out_dir / "audio_16k" / name, hyps)) is not None
    ]
    _write_or_clear(out_dir / name, kept, stats)
    logger.info("%s: kept %d utterances (%.3f h), dropped %d", name, stats.kept, stats.hours, sum(stats.dropped.values()))
    return kept, stats


def _write_or_clear(path: Path, utts: list[Utterance], stats: SplitStats) -> None:
    """Write the data dir, or remove a stale one when nothing is left."""
    if utts:
        write_data_dir(path, utts)
        return
    stats.comment = "no utterances kept: data dir not written"
    logger.warning("%s: %s", stats.name, stats.comment)
    if (path / "utt2spk").is_file():
        shutil.rmtree(path)


def prepare_data(
    out_dir: str | Path,
    myst_root: str | Path,
    librispeech_root: str | Path | None = None,
    whisper_hyp: str | Path | None = None,
    config: PrepConfig = PrepConfig(),
) -> list[SplitStats]:
    """Prepare all splits and subsets; return their stats (also in ``prep_summary.tsv``)."""
    out = Path(out_dir).resolve()
    myst_data = find_myst_data_dir(myst_root).resolve()
    roots = [Path(myst_root).resolve()] + ([Path(librispeech_root).resolve()] if librispeech_root else [])
    for root in roots:
        if _is_within(out, root):
            raise ValueError(f"output dir {out} is inside corpus {root}; corpora are read-only")
    hyps = read_whisper_hyps(whisper_hyp) if whisper_hyp else None
    if hyps is not None and not hyps:
        logger.warning("%s holds no hypotheses: the Whisper WER filter drops nothing (counted as no_whisper_hyp)", whisper_hyp)
    all_stats: list[SplitStats] = []
    train: list[Utterance] = []
    for folder, name in MYST_SPLITS.items():
        if not (myst_data / folder).is_dir():
            logger.warning("MyST split folder %s is missing; skipping %s", myst_data / folder, name)
            continue
        keep_long = config.keep_long_test and name == "test"
        cfg = ScreenConfig(
            max_duration=None if keep_long else config.max_duration,
            min_words=config.min_words,
            max_wer=config.max_wer,
            decode_audio=config.decode_audio,
            too_short_for_ctc=_too_short_for_ctc(name),
        )
        utts, stats = _prepare_split(name, iter_myst_candidates(myst_data / folder), cfg, out, hyps)
        all_stats.append(stats)
        if name == "train":
            train = utts
    if librispeech_root:
        for folder, name in LIBRISPEECH_SPLITS.items():
            split_dir = Path(librispeech_root) / folder
            if not split_dir.is_dir():
                logger.warning("LibriSpeech folder %s is missing; skipping %s", split_dir, name)
                continue
            cfg = ScreenConfig(
                max_duration=config.max_duration,
                min_words=None,
                max_wer=None,
                decode_audio=config.decode_audio,
                too_short_for_ctc=_too_short_for_ctc(name),
            )
            all_stats.append(_prepare_split(name, iter_librispeech_candidates(split_dir), cfg, out)[1])
    all_stats.extend(_write_subsets(out, train, config.subset_hours, config.seed))
    summary = write_summary_tsv(all_stats, out / SUMMARY_NAME)
    logger.info("summary written to %s", summary)
    return all_stats


def _too_short_for_ctc(split: str) -> str:
    return "keep" if split in TEST_SETS else "drop"


def _write_subsets(out: Path, train: list[Utterance], hours: Sequence[float], seed: int) -> list[SplitStats]:
    """Write the nested subsets of train; skipped sizes get a stats row with a comment."""
    subsets = nested_subsets(train, hours, seed)
    total_h = sum(u.duration for u in train) / 3600.0
    stats: list[SplitStats] = []
    for target in sorted(set(hours)):
        name = subset_name(target)
        s = SplitStats(name)
        if target in subsets:
            for u in subsets[target]:
                s.keep(u.duration)
            s.comment = f"nested subset of train ({target:g} h target, seed {seed})"
            write_data_dir(out / name, subsets[target])
        else:
            s.comment = f"skipped: train has only {total_h:.3f} h (< {target:g} h)"
            if (out / name / "utt2spk").is_file():
                shutil.rmtree(out / name)
        stats.append(s)
    return stats
