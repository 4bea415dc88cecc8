"""Discrete targets for HuBERT-style pre-training: MFCC frames and seeded k-means units.

The targets must align one to one with the frames of the upstreams' waveform CNN
(400-sample receptive field, 320-sample hop, no padding): utterance of ``n`` samples
-> ``floor((n - 400) / 320) + 1`` frames. Kaldi's MFCC with a 25 ms window, a 20 ms
shift and ``snip_edges`` yields exactly that count, so the i-th unit labels the i-th
frame without any resampling of the label sequence.

The k-means is a few lines of torch rather than a new dependency, and it draws every
random number from a private generator, so a given seed gives the same units on any
run of one machine.
"""

from __future__ import annotations

import logging
from typing import List, Sequence

import torch

SAMPLE_RATE = 16000
#: Receptive field and hop of the upstreams' waveform CNN, in samples.
FRAME_LENGTH = 400
FRAME_SHIFT = 320


def num_frames(samples: torch.Tensor | int) -> torch.Tensor | int:
    """Frames the 400/320 CNN computes from ``samples`` (0 when shorter than a window)."""
    if isinstance(samples, int):
        return (samples - FRAME_LENGTH) // FRAME_SHIFT + 1 if samples >= FRAME_LENGTH else 0
    frames = torch.div(samples - FRAME_LENGTH, FRAME_SHIFT, rounding_mode="floor") + 1
    return torch.where(samples >= FRAME_LENGTH, frames, torch.zeros_like(frames))


def mfcc_frames(wav: torch.Tensor, num_ceps: int = 13) -> torch.Tensor:
    """(frames, 3 * num_ceps) MFCCs with deltas and delta-deltas, as HuBERT's first targets.

    ``wav`` is one 16 kHz utterance in [-1, 1]; the frame grid is the CNN's (see module).
    """
    import torchaudio

    if wav.dim() != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {tuple(wav.shape)}")
    if wav.numel() < FRAME_LENGTH:
        raise ValueError(f"utterance of {wav.numel()} samples is shorter than one {FRAME_LENGTH}-sample frame")
    ceps = torchaudio.compliance.kaldi.mfcc(
        wav[None].float() * 32768.0,  # Kaldi's 16-bit scale; only the energy floor cares
        sample_frequency=SAMPLE_RATE,
        frame_length=1000.0 * FRAME_LENGTH / SAMPLE_RATE,
        frame_shift=1000.0 * FRAME_SHIFT / SAMPLE_RATE,
        num_ceps=num_ceps,
        dither=0.0,
        snip_edges=True,
        use_energy=False,
    )  # (frames, num_ceps)
    deltas = torchaudio.functional.compute_deltas(ceps.T[None])[0]
    ddeltas = torchaudio.functional.compute_deltas(deltas[None])[0]
    return torch.cat([ceps, deltas.T, ddeltas.T], dim=1)


def standardize(features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Global per-dimension zero mean, unit variance, so no MFCC order dominates k-means."""
    stacked = torch.cat(list(features), dim=0)
    mean = stacked.mean(0)
    std = stacked.std(0).clamp(min=1e-5)
    return [(f - mean) / std for f in features]


def _sq_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, K) squared Euclidean distances, computed in float64 to keep ties stable."""
    x = x.double()
    c = centroids.double()
    return ((x * x).sum(1, keepdim=True) - 2.0 * x @ c.T + (c * c).sum(1)[None]).clamp(min=0.0)


def kmeans_pp_init(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre is drawn with probability ~ squared distance."""
    n = x.size(0)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    closest = _sq_distances(x, x[first][None])[:, 0]
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # fewer distinct points than k: reuse a random point
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial(closest / total, 1, generator=generator))
        centroids.append(x[idx])
        closest = torch.minimum(closest, _sq_distances(x, x[idx][None])[:, 0])
    return torch.stack(centroids).clone()


def kmeans(
    x: torch.Tensor, k: int, *, iters: int = 30, seed: int = 0, max_points: int = 60000
) -> torch.Tensor:
    """(k, dim) centroids of ``x`` (N, dim): k-means++ init, then Lloyd iterations.

    At most ``max_points`` rows (a seeded random subset) are clustered, which keeps the
    recipe stage to seconds; an emptied cluster is re-seeded at the point farthest
    from its centre.
    """
    if x.dim() != 2 or x.size(0) < k:
        raise ValueError(f"k-means needs at least k={k} rows of a 2-D matrix, got shape {tuple(x.shape)}")
    generator = torch.Generator().manual_seed(seed)
    x = x.float()
    if x.size(0) > max_points:
        x = x[torch.randperm(x.size(0), generator=generator)[:max_points]]
    centroids = kmeans_pp_init(x, k, generator)
    for it in range(iters):
        dist = _sq_distances(x, centroids)
        assign = dist.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        new = sums / counts.clamp(min=1)[:, None].to(x.dtype)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            far = dist.min(1).values.argsort(descending=True)[: len(empty)]
            new[empty] = x[far]
        shift = float((new - centroids).abs().max())
        centroids = new
        if shift == 0.0:
            logging.debug("k-means converged after %d iterations", it + 1)
            break
    return centroids


def assign_units(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of every row of ``x``."""
    return _sq_distances(x.float(), centroids).argmin(1)


def cluster_units(features: Sequence[torch.Tensor], num_clusters: int, *, iters: int = 30, seed: int = 0,
                  max_points: int = 60000) -> List[torch.Tensor]:
    """Per utterance, the k-means unit of each frame of ``features`` (a list of (T, dim))."""
    stacked = torch.cat(list(features))
    centroids = kmeans(stacked, num_clusters, iters=iters, seed=seed, max_points=max_points)
    units = assign_units(stacked, centroids)
    used = int(torch.bincount(units, minlength=num_clusters).gt(0).sum())
    logging.info("k-means: %d frames -> %d units (%d used)", len(stacked), num_clusters, used)
    return list(units.split([len(f) for f in features]))
