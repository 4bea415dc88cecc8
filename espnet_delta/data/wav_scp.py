"""The utterances of a Kaldi ``wav.scp`` and their audio: sorted items, sample counts, samples.

Everything that reads audio by utterance (shape files, feature extraction, Whisper
screening, pre-training, layer-wise analysis) goes through :func:`read_wav_scp` and
:class:`AudioReader`, so all of them refuse the same lines and files with errors that
name the ``wav.scp`` line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List

import numpy as np

from espnet_delta.data.audio import TARGET_RATE, AudioError, probe_audio, read_audio
from espnet_delta.fileio import read_scp


@dataclasses.dataclass(frozen=True)
class AudioItem:
    utt: str
    path: str
    lineno: int  # in wav.scp, for error messages


def read_wav_scp(wav_scp: Path) -> List[AudioItem]:
    """``utt path`` lines, sorted by id in C byte order; pipes and duplicate ids refused."""
    rows = read_scp(wav_scp, what="wav.scp", value="<audio file>", allow_pipes=False, skip_blank=True)
    items = [AudioItem(utt, path, lineno) for lineno, utt, path in rows]
    if not items:
        raise ValueError(f"{wav_scp}: no utterances")
    return sorted(items, key=lambda it: it.utt.encode("utf-8"))


class AudioReader:
    """Sample counts and samples of wav.scp items; errors name the wav.scp line.

    The files are read by :mod:`espnet_delta.data.audio`, which data preparation uses
    too; the upstreams take 16 kHz mono, anything else is refused here.
    """

    def __init__(self, wav_scp: Path) -> None:
        self.wav_scp = wav_scp

    def _where(self, item: AudioItem) -> str:
        return f"{self.wav_scp}:{item.lineno}: {item.utt}"

    def num_samples(self, item: AudioItem) -> int:
        try:
            info = probe_audio(item.path)
        except AudioError as e:
            raise self._error(item, e) from e
        self._check_format(item, info.samplerate, info.channels)
        return info.frames

    def read(self, item: AudioItem) -> np.ndarray:
        try:
            wav, rate = read_audio(item.path)
        except AudioError as e:
            raise self._error(item, e) from e
        self._check_format(item, rate, wav.shape[1])
        return wav[:, 0]

    def _error(self, item: AudioItem, e: AudioError) -> ValueError:
        if e.reason == "empty_audio":
            return ValueError(f"{self._where(item)}: {item.path} holds no samples ({e})")
        return ValueError(f"{self._where(item)}: cannot read {item.path}: {e}")

    def _check_format(self, item: AudioItem, rate: int, channels: int) -> None:
        if rate != TARGET_RATE or channels != 1:
            raise ValueError(
                f"{self._where(item)}: {item.path} is {rate} Hz with {channels} channel(s); "
                f"the upstreams take {TARGET_RATE} Hz mono (data preparation resamples)"
            )
