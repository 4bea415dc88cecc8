"""Fusion of a reference embedding with one or more other (delta or fine-tuned) embeddings.

Plain PyTorch modules, usable without ESPnet. Every module maps
``(ref (B,T,D), others [(B,T,D_j)], lengths (B,))`` to ``(B,T,output_size)``; padded
frames (``t >= lengths[b]``) never influence valid frames.

* ``concat``: Z = [E_ref ; E_1 ; ... ; E_K]; output dim = D + sum D_j.
* ``weighted``: Z = lambda*E_ref + (1-lambda)*E_1 with one learnable scalar
  lambda = sigmoid(w), w initialised to 0 (lambda = 0.5); the sigmoid keeps lambda in
  (0, 1) under any optimiser step. Exactly one other model, same dimension.
* ``xattn``: A = MHA(query=E_ref, key=value=E_1) with a key padding mask,
  Z = LayerNorm(E_ref + A). Exactly one other model (its dimension may differ).
* ``moe``: a frame-wise gate w_t = softmax(E_ref,t W), W in R^{D x (1+K)} (no bias),
  Z_t = w_t,0 E_ref,t + sum_j w_t,j E_j,t. All dimensions equal. The last gate
  weights are kept in ``last_gate`` (B,T,1+K) for analysis.

Constructors are type-checked (typeguard): ``fusion_conf`` entries of a YAML config
become keyword arguments of the fusion module (``num_heads``, ``dropout`` of xattn).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence, Type

import torch
from typeguard import typechecked


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool, True on padded frames (PyTorch's key_padding_mask convention)."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class AbsFusion(torch.nn.Module, ABC):
    """Interface of a fusion module."""

    @abstractmethod
    def output_size(self) -> int:
        raise NotImplementedError

    @abstractmethod
    def forward(
        self, ref: torch.Tensor, others: Sequence[torch.Tensor], lengths: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


class ConcatFusion(AbsFusion):
    @typechecked
    def __init__(self, ref_size: int, other_sizes: Sequence[int]) -> None:
        super().__init__()
        self._size = ref_size + sum(other_sizes)

    def output_size(self) -> int:
        return self._size

    def forward(self, ref, others, lengths):
        return torch.cat([ref, *others], dim=-1)


def _require_same_dims(name: str, ref_size: int, other_sizes: Sequence[int]) -> None:
    if any(d != ref_size for d in other_sizes):
        raise ValueError(
            f"fusion '{name}' needs equal dimensions; reference {ref_size}, others {list(other_sizes)} "
            "(use concat or xattn for models of different widths)"
        )


def _require_one_other(name: str, other_sizes: Sequence[int]) -> None:
    if len(other_sizes) != 1:
        raise ValueError(
            f"fusion '{name}' fuses the reference with exactly one other model, got {len(other_sizes)} "
            "(concat and moe take several)"
        )


class WeightedFusion(AbsFusion):
    @typechecked
    def __init__(self, ref_size: int, other_sizes: Sequence[int]) -> None:
        super().__init__()
        _require_one_other("weighted", other_sizes)
        _require_same_dims("weighted", ref_size, other_sizes)
        self.logit = torch.nn.Parameter(torch.zeros(()))
        self._size = ref_size

    @property
    def weight(self) -> torch.Tensor:
        """lambda in (0, 1): the reference's share."""
        return torch.sigmoid(self.logit)

    def output_size(self) -> int:
        return self._size

    def forward(self, ref, others, lengths):
        lam = self.weight
        return lam * ref + (1.0 - lam) * others[0]


class CrossAttentionFusion(AbsFusion):
    @typechecked
    def __init__(
        self, ref_size: int, other_sizes: Sequence[int], num_heads: int = 8, dropout: float = 0.0
    ) -> None:
        super().__init__()
        _require_one_other("xattn", other_sizes)
        if ref_size % num_heads:
            raise ValueError(f"xattn: num_heads={num_heads} must divide the reference dimension {ref_size}")
        self.attention = torch.nn.MultiheadAttention(
            ref_size,
            num_heads,
            dropout=dropout,
            kdim=other_sizes[0],
            vdim=other_sizes[0],
            batch_first=True,
        )
        self.norm = torch.nn.LayerNorm(ref_size)
        self._size = ref_size

    def output_size(self) -> int:
        return self._size

    def forward(self, ref, others, lengths):
        mask = padding_mask(lengths, others[0].size(1))
        attended, _ = self.attention(ref, others[0], others[0], key_padding_mask=mask, need_weights=False)
        return self.norm(ref + attended)


class MoEFusion(AbsFusion):
    @typechecked
    def __init__(self, ref_size: int, other_sizes: Sequence[int]) -> None:
        super().__init__()
        _require_same_dims("moe", ref_size, other_sizes)
        self.gate = torch.nn.Linear(ref_size, 1 + len(other_sizes), bias=False)
        self._size = ref_size
        self.last_gate: Optional[torch.Tensor] = None

    def output_size(self) -> int:
        return self._size

    def forward(self, ref, others, lengths):
        weights = torch.softmax(self.gate(ref), dim=-1)
        self.last_gate = weights.detach()
        experts = torch.stack([ref, *others], dim=-1)  # (B, T, D, 1+K)
        return (experts * weights.unsqueeze(-2)).sum(-1)


FUSIONS: Dict[str, Type[AbsFusion]] = {
    "concat": ConcatFusion,
    "weighted": WeightedFusion,
    "xattn": CrossAttentionFusion,
    "moe": MoEFusion,
}


def build_fusion(name: str, ref_size: int, other_sizes: List[int], **conf: Any) -> AbsFusion:
    """``FUSIONS[name](ref_size, other_sizes, **conf)``; ``conf`` is a config's ``fusion_conf``."""
    if name not in FUSIONS:
        raise ValueError(f"fusion={name!r}; expected one of {sorted(FUSIONS)}")
    return FUSIONS[name](ref_size, other_sizes, **conf)


class FusionHead(torch.nn.Module):
    """Fusion followed by the authors' head normalisation: LayerNorm(fused) -> Dropout.

    The released code of arXiv 2601.20142 (concat only) applies LayerNorm over the
    fused dimension and Dropout(0.1) before the linear CTC head; this is the default
    here for every fusion method (``head_norm: false`` turns the LayerNorm off).
    """

    @typechecked
    def __init__(
        self,
        fusion: str,
        ref_size: int,
        other_sizes: Sequence[int],
        fusion_conf: Optional[Dict[str, Any]] = None,
        head_norm: bool = True,
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.fusion = build_fusion(fusion, ref_size, list(other_sizes), **(fusion_conf or {}))
        size = self.fusion.output_size()
        self.norm = torch.nn.LayerNorm(size) if head_norm else torch.nn.Identity()
        self.dropout = torch.nn.Dropout(head_dropout)

    def output_size(self) -> int:
        return self.fusion.output_size()

    def forward(self, ref, others, lengths):
        z = self.dropout(self.norm(self.fusion(ref, others, lengths)))
        valid = ~padding_mask(lengths.to(z.device), z.size(1))
        return z * valid.unsqueeze(-1).to(z.dtype)
