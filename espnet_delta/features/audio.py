"""How extraction walks a wav.scp: shards, length-sorted batches, padded waveforms, prefetching.

The items and their audio come from :mod:`espnet_delta.data.wav_scp`.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, List, Sequence, Tuple, TypeVar

import torch

from espnet_delta.data.wav_scp import AudioItem, AudioReader


def shard_items(items: Sequence[AudioItem], nj: int, shard: int) -> List[AudioItem]:
    """Round-robin: the i-th utterance (sorted by id) goes to shard i % nj + 1."""
    return list(items[shard - 1 :: nj])


def _utts_fingerprint(items: Sequence[AudioItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.utt} {it.path}\n".encode("utf-8"))
    return h.hexdigest()


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
