"""Speed perturbation of a Kaldi data dir, as ESPnet's ``<set>_sp`` (Ko et al., 2015).

Factor f plays the audio f times as fast: the samples are read as if recorded at
``f * 16000`` Hz and resampled to 16 kHz (torchaudio's windowed-sinc resampler), so
duration and pitch both change by 1/f and ``N`` samples become ``ceil(N / f)``
(exactly ``ceil(N * 16000 / (f * 16000))``; ``f * 16000`` must be a whole number).
Sox's ``speed`` effect, which ESPnet's shell recipes use, does the same.

Every utterance appears once per factor with id ``sp<f>-<utt>`` and speaker
``sp<f>-<spk>`` (Kaldi's ``perturb_data_dir_speed.sh`` naming, so ids stay
speaker-prefixed; ``<f>`` as written by :func:`factor_tag`: 0.9, 1.0, 1.1). Factor 1.0
points at the original audio; the others are written as 16-bit FLAC to
``<audio_dir>/sp<f>/<utt>.flac``, each atomically (a temporary name, then a rename),
so an interrupted run resumes where it stopped and existing files are kept. Nothing is
written into the source audio's folders; the data dir is written last, atomically.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from espnet_delta.fileio import atomic_path

from .audio import TARGET_RATE, AudioError, read_audio
from .kaldi_dir import Utterance, read_data_dir, write_data_dir

__all__ = ["factor_tag", "perturb_samples", "speed_perturb_dir"]

logger = logging.getLogger(__name__)


def factor_tag(factor: float) -> str:
    """``0.9`` -> ``"0.9"``, ``1`` -> ``"1.0"``, ``1.05`` -> ``"1.05"`` (the id prefix is ``sp<tag>-``)."""
    if factor <= 0 or not math.isfinite(factor):
        raise ValueError(f"speed factor must be positive, got {factor}")
    tag = f"{factor:g}"
    return tag if "." in tag or "e" in tag else f"{tag}.0"


def _source_rate(factor: float, rate: int) -> int:
    src = factor * rate
    if abs(src - round(src)) > 1e-6:
        raise ValueError(f"speed factor {factor} times {rate} Hz is not a whole number of Hz")
    return int(round(src))


def perturb_samples(wav: np.ndarray, factor: float, rate: int = TARGET_RATE) -> np.ndarray:
    """``wav`` (float, mono) played ``factor`` times as fast, at the same ``rate``; clipped to [-1, 1]."""
    if factor == 1.0:
        return wav
    import torchaudio.functional as F

    out = F.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), _source_rate(factor, rate), rate)
    return out.clamp_(-1.0, 1.0).numpy()


def _write_flac(path: Path, wav: np.ndarray, rate: int) -> None:
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), wav, rate, subtype="PCM_16", format="FLAC")


def speed_perturb_dir(
    src_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    factors: Sequence[float] = (0.9, 1.0, 1.1),
    audio_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the data dir ``out_dir`` holding every utterance of ``src_dir`` at every factor.

    ``audio_dir`` (default ``<out_dir's parent>/audio_sp/<out_dir's name>``) receives the
    perturbed audio; it may not be inside ``out_dir``, which is replaced as a whole.
    """
    src, out = Path(src_dir), Path(out_dir).resolve()
    audio = Path(audio_dir).resolve() if audio_dir else out.parent / "audio_sp" / out.name
    if audio == out or out in audio.parents:
        raise ValueError(f"audio dir {audio} is inside the data dir {out}, which is rewritten as a whole")
    if not factors or len(set(factors)) != len(factors):
        raise ValueError(f"speed factors must be given, each once: {list(factors)}")
    tags = [factor_tag(f) for f in factors]
    utts = read_data_dir(src)
    for f in factors:
        if f != 1.0:
            _source_rate(f, TARGET_RATE)  # refuse a factor before any work
    result: list[Utterance] = []
    for f, tag in zip(factors, tags):
        for u in tqdm(utts, desc=f"speed {tag}", unit="utt", leave=False):
            sp_id, sp_spk = f"sp{tag}-{u.utt_id}", f"sp{tag}-{u.spk_id}"
            if f == 1.0:
                result.append(Utterance(sp_id, sp_spk, u.wav, u.text, u.duration))
                continue
            path = audio / f"sp{tag}" / f"{u.utt_id}.flac"
            if path.is_file():
                frames = soundfile.info(str(path)).frames
            else:
                try:
                    wav, rate = read_audio(u.wav)
                except AudioError as e:
                    raise ValueError(f"{src / 'wav.scp'}: utterance {u.utt_id}: cannot read {u.wav}: {e}") from None
                if rate != TARGET_RATE or wav.shape[1] != 1:
                    raise ValueError(f"{u.wav} (utterance {u.utt_id} of {src}): expected 16 kHz mono audio, "
                                     f"got {rate} Hz with {wav.shape[1]} channel(s)")
                wav = perturb_samples(wav[:, 0], f)
                _write_flac(path, wav, TARGET_RATE)
                frames = len(wav)
            result.append(Utterance(sp_id, sp_spk, str(path), u.text, frames / TARGET_RATE))
    write_data_dir(out, result)
    logger.info("%s: %d utterances (factors %s) from %s; audio in %s", out, len(result), " ".join(tags), src, audio)
    return out
