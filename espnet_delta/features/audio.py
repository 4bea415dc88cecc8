"""The utterances of a wav.scp as extraction reads them: sorted items, shards, audio, batches."""

from __future__ import annotations

import dataclasses
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, List, Sequence, Tuple, TypeVar

import numpy as np
import torch

from espnet_delta.data.audio import TARGET_RATE, AudioError, probe_audio, read_audio
from espnet_delta.fileio import read_table


@dataclasses.dataclass(frozen=True)
class AudioItem:
    utt: str
    path: str
    lineno: int  # in wav.scp, for error messages


def read_wav_scp(wav_scp: Path) -> List[AudioItem]:
    """``utt path`` lines, sorted by id in C byte order; pipes and duplicate ids refused."""
    items = []
    for lineno, utt, path in read_table(wav_scp, what="wav.scp", skip_blank=True):
        if not path or path.endswith("|"):
            got = f"{utt} {path}".strip()
            raise ValueError(f"{wav_scp}:{lineno}: expected '<utt> <audio file>' (no pipes), got {got!r}")
        items.append(AudioItem(utt, path, lineno))
    if not items:
        raise ValueError(f"{wav_scp}: no utterances")
    return sorted(items, key=lambda it: it.utt.encode("utf-8"))


def shard_items(items: Sequence[AudioItem], nj: int, shard: int) -> List[AudioItem]:
    """Round-robin: the i-th utterance (sorted by id) goes to shard i % nj + 1."""
    return list(items[shard - 1 :: nj])


def _utts_fingerprint(items: Sequence[AudioItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.utt} {it.path}\n".encode("utf-8"))
    return h.hexdigest()


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


def make_batches(
    items: Sequence[AudioItem], lengths: Sequence[int], batch_samples: int, batch_size: int
) -> List[List[Tuple[AudioItem, int]]]:
    """Longest first; a batch holds at most ``batch_size`` utterances and ``batch_samples``
    padded samples (one utterance longer than that forms a batch alone)."""
    order = sorted(zip(items, lengths), key=lambda p: (-p[1], p[0].utt.encode("utf-8")))
    batches: List[List[Tuple[AudioItem, int]]] = []
    current: List[Tuple[AudioItem, int]] = []
    for item, n in order:
        if current and (len(current) >= batch_size or (len(current) + 1) * current[0][1] > batch_samples):
            batches.append(current)
            current = []
        current.append((item, n))
    if current:
        batches.append(current)
    return batches


Batch = List[Tuple[AudioItem, int]]
T = TypeVar("T")


def padded_batch(audio: AudioReader, batch: Batch, pin_memory: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """The batch's waveforms zero-padded to ``(B, max samples)`` and their lengths ``(B,)``;
    pinned (page-locked) for an asynchronous copy to a GPU when ``pin_memory``."""
    signals = [audio.read(item) for item, _ in batch]
    lens = torch.tensor([len(w) for w in signals], dtype=torch.long)
    wavs = torch.zeros(len(batch), int(lens.max()), pin_memory=pin_memory)
    for i, wav in enumerate(signals):
        wavs[i, : len(wav)] = torch.from_numpy(wav)
    return wavs, lens


def prefetched(batches: Sequence[Batch], load: Callable[[Batch], T]) -> Iterator[Tuple[Batch, T]]:
    """``(batch, load(batch))`` in order, loading the next batch in a background thread
    while the caller computes on the current one (file reads release the GIL), so audio
    I/O overlaps the forwards. At most two batches are held at once."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio-prefetch") as pool:
        pending = pool.submit(load, batches[0])
        for i, batch in enumerate(batches):
            loaded = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(load, batches[i + 1])
            yield batch, loaded
