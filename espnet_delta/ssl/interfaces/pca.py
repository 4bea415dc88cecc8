"""PCA over the concatenated layers: a fixed projection fitted on training frames.

The seed (arXiv 2406.12209, a summary) lists PCA among the compared interfaces but says
neither what it is fitted over nor on what. The project's reading (docs/interfaces.md):

* fitted per frame on the layer-major concatenation of the L states (L * D values, as
  ``concat`` sees them), centred, not whitened; the output is the projection onto the
  top ``output_dim`` principal directions (default D). It is ``concat`` with the learned
  Linear replaced by an unsupervised, fixed one: no trainable parameters.
* fitted on the first ``fit_frames`` non-padded frames the module sees in training mode
  (the first training batches, in the loader's order), then frozen. Until then every
  training batch is projected with the fit of the frames collected so far (refitted per
  batch), so the downstream sees the final projection from the batch that completes the
  count on. Nothing outside the module changes: no extra stage, no fit step.
* stored as buffers (``fixed_mean``, ``fixed_components``, ``fixed_frames`` = the frames of
  the final fit, 0 until frozen) so the ESPnet checkpoint holds the projection and
  decoding, resuming or averaging checkpoints never refits. Entering eval mode with a
  partial collection freezes the fit on what was collected; an unfitted module in eval
  mode with nothing collected is an error.

Each principal direction's sign is fixed (its first entry that is not ~0 is positive), so
the fit does not depend on the eigen-solver.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import torch
from typeguard import typechecked

from espnet_delta.ssl.interfaces.base import AbsLayerInterface, layer_major


def principal_directions(x: torch.Tensor, k: int):
    """(mean [N_features], directions [N_features, k]) of samples ``x`` [N, F], in float64.

    Uses the smaller of the F x F covariance and the N x N Gram matrix (at paper scale
    F = 25 x 1024 exceeds the fitted frame count). Directions past the data's rank are zero.
    """
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    n, f = xc.shape
    if n >= f:
        evals, vecs = torch.linalg.eigh(xc.T @ xc)  # ascending
        evals, vecs = evals.flip(0)[:k], vecs.flip(1)[:, :k]
    else:
        evals, u = torch.linalg.eigh(xc @ xc.T)
        evals, u = evals.flip(0)[:k], u.flip(1)[:, :k]
        vecs = xc.T @ (u / evals.clamp_min(1e-300).sqrt())  # right singular vectors
    keep = evals > evals.max().clamp_min(0) * 1e-10 if evals.numel() else evals.bool()
    vecs = vecs * keep.to(vecs.dtype)
    if vecs.size(1) < k:  # fewer frames than directions
        vecs = torch.cat([vecs, vecs.new_zeros(f, k - vecs.size(1))], dim=1)
    # sign: the first entry of every direction that is not ~0 positive (a largest-magnitude
    # rule would flip on rounding when two entries tie, as for (1, -1) / sqrt(2))
    big = vecs.abs() > vecs.abs().amax(0, keepdim=True) * 1e-6
    idx = big.to(torch.int8).argmax(0)
    sign = torch.sign(vecs.gather(0, idx[None])[0])
    vecs = vecs * torch.where(sign == 0, torch.ones_like(sign), sign)
    return mean, vecs


class PCAInterface(AbsLayerInterface):
    """Layer-major L * D per frame -> centred projection on ``output_dim`` principal directions (fixed)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int, output_dim: Optional[int] = None, fit_frames: int = 10000) -> None:
        super().__init__(num_layers, dim)
        in_dim = num_layers * dim
        k = dim if output_dim is None else output_dim
        if not 1 <= k <= in_dim:
            raise ValueError(f"pca: output_dim must be in [1, L * D = {in_dim}], got {k}")
        if fit_frames < k:
            raise ValueError(f"pca: fit_frames={fit_frames} is smaller than output_dim={k}")
        self.fit_frames = fit_frames
        self.register_buffer("fixed_mean", torch.zeros(in_dim))
        self.register_buffer("fixed_components", torch.zeros(in_dim, k))
        # float, not bool/int: ESPnet's checkpoint averaging divides every float tensor by n
        self.register_buffer("fixed_frames", torch.zeros(()))
        self._collected: List[torch.Tensor] = []  # not state: freed once fitted

    def output_size(self) -> int:
        return self.fixed_components.size(1)

    @property
    def fitted(self) -> bool:
        return bool(self.fixed_frames > 0)

    def fit(self, frames: torch.Tensor, final: bool = True) -> None:
        """Fit on ``frames`` [N, L * D]; ``final`` freezes it (records N in ``fixed_frames``)."""
        with torch.no_grad(), torch.autocast(device_type=frames.device.type, enabled=False):
            mean, vecs = principal_directions(frames.detach(), self.output_size())
            self.fixed_mean.copy_(mean)
            self.fixed_components.copy_(vecs)
            if final:
                self.fixed_frames.fill_(float(frames.size(0)))
                self._collected = []
                logging.info("pca interface: fitted on %d frames, %d -> %d dims, now fixed",
                             frames.size(0), frames.size(1), self.output_size())

    def observe(self, states: torch.Tensor, lengths: torch.Tensor) -> None:
        if self.fitted:
            return
        if not self.training:
            if not self._collected:
                raise RuntimeError("pca interface: not fitted (no training frames seen, and the checkpoint holds "
                                   "no fit); train it first or load a trained model")
            self.fit(torch.cat(self._collected))
            return
        have = sum(c.size(0) for c in self._collected)
        valid = torch.arange(states.size(2), device=states.device)[None] < lengths.to(states.device)[:, None]
        frames = layer_major(states.detach())[valid][: self.fit_frames - have].double()
        self._collected.append(frames)
        everything = torch.cat(self._collected)
        self.fit(everything, final=everything.size(0) >= self.fit_frames)

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        x = layer_major(states)
        return (x - self.fixed_mean.to(x.dtype)) @ self.fixed_components.to(x.dtype)
