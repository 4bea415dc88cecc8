"""Turn (audio, transcript) candidates into kept utterances or counted drops.

Corpus readers (:mod:`.myst`, :mod:`.librispeech`) only find files and build
:class:`Candidate` objects; every check lives here so that both corpora count
bad input the same way.  Checks run in the order of
:data:`~espnet_delta.data.report.DROP_REASONS` and the first failure wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jiwer

from .audio import AudioError, probe_audio, resample_to_16k
from .kaldi_dir import Utterance
from .report import SplitStats
from .text_norm import normalize_transcript

__all__ = ["Candidate", "ScreenConfig", "screen", "word_error_rate"]


@dataclass(frozen=True)
class Candidate:
    """A possible utterance as found on disk (nothing validated yet)."""

    utt_id: str
    spk_id: str
    audio: Path | None  # None: transcript without audio
    text: bytes | None  # raw transcript bytes; None: audio without transcript
    text_source: Path  # file the transcript comes (or should come) from
    alt_ids: tuple[str, ...] = ()  # other keys accepted in the Whisper hypothesis file


@dataclass(frozen=True)
class ScreenConfig:
    """Filters of one split.  ``None`` disables a filter."""

    max_duration: float | None = 30.0
    min_words: int | None = 3
    max_wer: float | None = 0.5
    decode_audio: bool = False  # fully decode audio to catch truncated files


def word_error_rate(ref: str, hyp: str) -> float:
    """WER of two transcripts after :func:`normalize_transcript` on both."""
    ref_n, hyp_n = normalize_transcript(ref), normalize_transcript(hyp)
    if not ref_n:
        return 0.0 if not hyp_n else 1.0
    if not hyp_n:
        return 1.0
    return float(jiwer.wer(ref_n, hyp_n))


def screen(
    cand: Candidate,
    cfg: ScreenConfig,
    stats: SplitStats,
    resample_dir: Path,
    hyps: dict[str, str] | None = None,
) -> Utterance | None:
    """Return the utterance to keep, or ``None`` after counting why not."""
    if cand.text is None:
        stats.drop("missing_transcript", cand.audio or cand.text_source, f"no transcript in {cand.text_source}")
        return None
    if cand.audio is None:
        stats.drop("missing_audio", cand.text_source, f"utterance {cand.utt_id} has no audio file")
        return None
    try:
        raw = cand.text.decode("utf-8")
    except UnicodeDecodeError as exc:
        stats.drop("non_utf8_text", cand.text_source, str(exc))
        return None
    try:
        info = probe_audio(cand.audio, decode=cfg.decode_audio)
    except AudioError as exc:
        stats.drop(exc.reason, cand.audio, str(exc))
        return None
    text = normalize_transcript(raw)
    if not text:
        stats.drop("empty_after_cleaning", cand.text_source, f"raw transcript {raw.strip()!r}")
        return None
    if cfg.min_words is not None and len(text.split()) < cfg.min_words:
        stats.drop("too_few_words", cand.text_source, text)
        return None
    if cfg.max_duration is not None and info.duration > cfg.max_duration:
        stats.drop("too_long", cand.audio, f"{info.duration:.2f} s")
        return None
    if hyps is not None:
        hyp = next((hyps[k] for k in (cand.utt_id, *cand.alt_ids) if k in hyps), None)
        if hyp is None:
            stats.notes["no_whisper_hyp"] += 1
        elif cfg.max_wer is not None and (wer := word_error_rate(text, hyp)) > cfg.max_wer:
            stats.drop("whisper_wer", cand.audio, f"WER {wer:.2f}")
            return None
    wav = cand.audio
    if info.needs_resampling:
        try:
            wav = resample_to_16k(cand.audio, resample_dir / f"{cand.utt_id}.wav")
        except AudioError as exc:
            stats.drop(exc.reason, cand.audio, str(exc))
            return None
        stats.notes["resampled"] += 1
    stats.keep(info.duration)
    return Utterance(cand.utt_id, cand.spk_id, str(wav.resolve()), text, info.duration)
