"""The simple interfaces: last, weighted sum (SUPERB's featurizer) and concatenation."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from typeguard import typechecked

from espnet_delta.ssl.interfaces.base import AbsLayerInterface, layer_major


class LastInterface(AbsLayerInterface):
    """The final hidden state (the usual "last layer" feature)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__(num_layers, dim)

    def output_size(self) -> int:
        return self.dim

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        return states[:, -1]


class WeightedSumInterface(AbsLayerInterface):
    """SUPERB's featurizer: sum_l softmax(w)_l h_l, w initialised to zeros (equal weights)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int, layer_norm: bool = False) -> None:
        super().__init__(num_layers, dim)
        self.layer_norm = layer_norm
        self.weights = torch.nn.Parameter(torch.zeros(num_layers))

    def output_size(self) -> int:
        return self.dim

    def layer_weights(self) -> torch.Tensor:
        """The normalised weights (L,), summing to 1; what analysis plots."""
        return torch.softmax(self.weights, dim=0)

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        if self.layer_norm:
            states = F.layer_norm(states, states.shape[-1:])
        w = self.layer_weights().to(states.dtype)
        return torch.einsum("l,bltd->btd", w, states)


class ConcatInterface(AbsLayerInterface):
    """All L states side by side (L * D, layer-major), projected by one Linear to ``output_dim`` (default D)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int, output_dim: Optional[int] = None) -> None:
        super().__init__(num_layers, dim)
        if output_dim is not None and output_dim < 1:
            raise ValueError(f"concat: output_dim must be positive, got {output_dim}")
        self.projection = torch.nn.Linear(num_layers * dim, output_dim or dim)

    def output_size(self) -> int:
        return self.projection.out_features

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        return self.projection(layer_major(states))
