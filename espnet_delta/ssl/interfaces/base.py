"""The contract every layer interface keeps: ``[B, L, T, D]`` states -> ``[B, T, F]``, per frame."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence, Tuple, Union

import torch

HiddenStates = Union[torch.Tensor, Sequence[torch.Tensor]]

#: Prefix of buffers that are part of an interface's fixed (fitted, never trained) state,
#: e.g. PCA's projection: saved in the checkpoint but not trainable parameters.
FIXED_PREFIX = "fixed_"


class AbsLayerInterface(torch.nn.Module, ABC):
    """Maps hidden states ``[B, L, T, D]`` (or a list of L ``[B, T, D]``) and lengths ``[B]``
    to ``([B, T, F], lengths)``; F is :meth:`output_size`, fixed by (L, D)."""

    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__()
        if num_layers < 1 or dim < 1:
            raise ValueError(f"{type(self).__name__}: need num_layers >= 1 and dim >= 1, got L={num_layers}, D={dim}")
        self.num_layers = num_layers
        self.dim = dim

    @abstractmethod
    def output_size(self) -> int:
        raise NotImplementedError

    @abstractmethod
    def combine(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, L, T, D]`` -> ``[B, T, F]``, each frame on its own."""
        raise NotImplementedError

    def observe(self, states: torch.Tensor, lengths: torch.Tensor) -> None:
        """Sees every batch before :meth:`combine` (with its lengths); fitted interfaces
        (PCA) collect training frames here. Default: nothing."""

    def stack(self, hidden_states: HiddenStates) -> torch.Tensor:
        """The states as one ``[B, L, T, D]`` tensor, checked against (L, D)."""
        x = hidden_states if isinstance(hidden_states, torch.Tensor) else torch.stack(list(hidden_states), dim=1)
        if x.dim() != 4 or x.size(1) != self.num_layers or x.size(3) != self.dim:
            raise ValueError(
                f"{type(self).__name__} was built for L={self.num_layers} hidden states of D={self.dim}; "
                f"got states of shape {tuple(x.shape)} (expected [B, {self.num_layers}, T, {self.dim}])"
            )
        return x

    def forward(self, hidden_states: HiddenStates, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.stack(hidden_states)
        self.observe(x, lengths)
        out = self.combine(x)
        valid = torch.arange(out.size(1), device=out.device)[None, :] < lengths.to(out.device)[:, None]
        return out * valid.unsqueeze(-1).to(out.dtype), lengths


def layer_major(states: torch.Tensor) -> torch.Tensor:
    """``[B, L, T, D]`` -> ``[B, T, L * D]``: per frame [layer 0 features, layer 1 features, ...]."""
    b, n_layers, t, d = states.shape
    return states.permute(0, 2, 1, 3).reshape(b, t, n_layers * d)
