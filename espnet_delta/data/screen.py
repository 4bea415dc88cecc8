"""Turn (audio, transcript) candidates into kept utterances or counted drops.

Corpus readers (:mod:`.myst`, :mod:`.librispeech`) only find files and build
:class:`Candidate` objects; every check lives here so that both corpora count
bad input the same way.  Checks run in the order of
:data:`~espnet_delta.data.report.DROP_REASONS` and the first failure wins.

CTC feasibility (``too_short_for_ctc``): the SSL upstreams' convolutional stack
(400-sample window, 320-sample hop at 16 kHz) yields
``floor((samples - 400) / 320) + 1`` frames (none below 400 samples), and a CTC
path over the character labels (``<space>`` included) needs one frame per label
plus one blank between each pair of equal adjacent labels.  Shorter audio gets an
infinite CTC loss, which ESPnet's ``zero_infinity`` silently zeroes, so training
and dev sets drop such utterances; test sets keep them (a WER must count every
reference) and the summary lists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .audio import TARGET_RATE, AudioError, AudioInfo, probe_audio, resample_to_16k
from .kaldi_dir import Utterance, id_problem
from .report import SplitStats
from .text_norm import normalize_transcript
from .tokens import char_tokens
from .word_align import count_errors

__all__ = ["Candidate", "ScreenConfig", "ctc_min_frames", "misplaced_files", "screen", "ssl_frames", "unique_candidates", "word_error_rate"]

#: Receptive field and hop (samples at 16 kHz) of the SSL upstreams' convolutional stack.
SSL_WINDOW = 400
SSL_HOP = 320


@dataclass(frozen=True)
class Candidate:
    """A possible utterance as found on disk (nothing validated yet)."""

    utt_id: str
    spk_id: str
    audio: Path | None  # None: transcript without audio
    text: bytes | None  # raw transcript bytes; None: audio without transcript
    text_source: Path  # file the transcript comes (or should come) from
    alt_ids: tuple[str, ...] = ()  # other keys accepted in the Whisper hypothesis file
    problem: tuple[str, str] | None = None  # (drop reason, detail) a reader found already, e.g. misplaced_file


@dataclass(frozen=True)
class ScreenConfig:
    """Filters of one split.  ``None`` disables a filter."""

    max_duration: float | None = 30.0
    min_words: int | None = 3
    max_wer: float | None = 0.5
    decode_audio: bool = False  # fully decode audio to catch truncated files
    too_short_for_ctc: Literal["drop", "keep"] = "drop"  # "keep" (and list) in test sets


def unique_candidates(candidates: Iterable[Candidate], stats: SplitStats) -> Iterator[Candidate]:
    """The candidates whose id was not seen before; later ones are dropped as
    ``duplicate_utt_id`` (the same MyST name as ``.flac`` and ``.wav``, a repeated
    ``.trans.txt`` line), naming both files, so no second copy ever reaches a data dir."""
    first: dict[str, Candidate] = {}
    for cand in candidates:
        if cand.problem is None and (prev := first.get(cand.utt_id)) is not None:
            same = "same" if cand.text == prev.text else "different"
            if cand.audio == prev.audio:  # a repeated transcript line
                where, detail = cand.text_source, f"id {cand.utt_id!r} repeated ({same} transcript); the first line is used"
            else:
                where, detail = cand.audio or cand.text_source, (
                    f"id {cand.utt_id!r} already taken by {prev.audio or prev.text_source} ({same} transcript)")
            stats.drop("duplicate_utt_id", where, detail)
            continue
        first.setdefault(cand.utt_id, cand)
        yield cand


def misplaced_files(split_dir: Path, depth: int, match) -> list[Path]:
    """Files under ``split_dir`` that ``match(path)`` accepts but that lie at another folder
    depth than the corpus layout's ``depth`` (1 = directly in ``split_dir``), sorted: an
    extra or a missing folder level, which a layout-based reader would skip without a word."""
    return sorted(p for p in split_dir.rglob("*")
                  if len(p.relative_to(split_dir).parts) != depth and match(p) and (p.is_file() or p.is_symlink()))


def word_error_rate(ref: str, hyp: str) -> float:
    """WER of two transcripts after :func:`normalize_transcript` on both.

    Errors are counted on sclite's alignment (:mod:`.word_align`), as in
    the reported WERs.
    """
    ref_words, hyp_words = normalize_transcript(ref).split(), normalize_transcript(hyp).split()
    if not ref_words:
        return 0.0 if not hyp_words else 1.0
    return count_errors(ref_words, hyp_words).errors / len(ref_words)


def ssl_frames(samples: int) -> int:
    """Frames of the upstreams' conv stack for ``samples`` at 16 kHz (module docstring)."""
    return (samples - SSL_WINDOW) // SSL_HOP + 1 if samples >= SSL_WINDOW else 0


def ctc_min_frames(text: str) -> int:
    """Frames a CTC path over the character labels of ``text`` needs (module docstring)."""
    labels = char_tokens(text)
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def _samples_at_16k(info: AudioInfo) -> int:
    """Samples after resampling to 16 kHz (exact for 16 kHz input, nearest otherwise)."""
    return info.frames if info.samplerate == TARGET_RATE else round(info.frames * TARGET_RATE / info.samplerate)


def screen(
    cand: Candidate,
    cfg: ScreenConfig,
    stats: SplitStats,
    resample_dir: Path,
    hyps: dict[str, str] | None = None,
) -> Utterance | None:
    """Return the utterance to keep, or ``None`` after counting why not."""
    if cand.problem is not None:
        stats.drop(cand.problem[0], cand.audio or cand.text_source, cand.problem[1])
        return None
    for kind, value in (("utterance id", cand.utt_id), ("speaker id", cand.spk_id)):
        if (problem := id_problem(value)) is not None:
            stats.drop("bad_utt_id", cand.audio or cand.text_source, f"{kind} {value!r} {problem}")
            return None
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
    frames, needed = ssl_frames(_samples_at_16k(info)), ctc_min_frames(text)
    too_short = frames < needed
    if too_short and cfg.too_short_for_ctc == "drop":
        stats.drop("too_short_for_ctc", cand.audio, f"{frames} frames for {needed} CTC labels and blanks")
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
    if too_short:
        stats.keep_too_short_for_ctc(cand.utt_id, cand.audio, f"{frames} frames for {needed} CTC labels and blanks")
    stats.keep(info.duration)
    return Utterance(cand.utt_id, cand.spk_id, str(wav.resolve()), text, info.duration)
