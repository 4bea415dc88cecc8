"""CLS pooling: a learned token attends over the layer axis, per frame (arXiv 2406.12209).

The seed names CLS pooling as the data-dependent interface without its details. The
project's reading (docs/interfaces.md): for every frame, the L layer vectors h_1..h_L
are the keys and values of one attention whose query is a learned token q (D values):

    a_l = softmax_l( q . (W_k h_l) / sqrt(D / H) ),   out = W_o sum_l a_l (W_v h_l + b_v) + b_o

with H heads (``num_heads``, default 1; q, keys and values split into H parts of D / H).
No query projection (W_q q is just another learned vector) and no key bias (q . b_k is the
same for every layer, so softmax ignores it). No layer position is added: a layer's weight
depends on its content. q starts at zero, so the interface starts as the equal-weight mean
of the layers through W_v and W_o, as ``weighted_sum`` starts equal. F = D; trainable
parameters 3 D^2 + 3 D.
"""

from __future__ import annotations

import torch
from typeguard import typechecked

from espnet_delta.ssl.interfaces.base import AbsLayerInterface


class CLSPoolingInterface(AbsLayerInterface):
    """A learned query token attending over the L layer vectors of each frame."""

    @typechecked
    def __init__(self, num_layers: int, dim: int, num_heads: int = 1) -> None:
        super().__init__(num_layers, dim)
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"cls_pooling: num_heads={num_heads} must divide D={dim}")
        self.num_heads = num_heads
        self.query = torch.nn.Parameter(torch.zeros(dim))
        self.key = torch.nn.Linear(dim, dim, bias=False)
        self.value = torch.nn.Linear(dim, dim)
        self.out = torch.nn.Linear(dim, dim)

    def output_size(self) -> int:
        return self.dim

    def attention(self, states: torch.Tensor) -> torch.Tensor:
        """Weights ``[B, T, H, L]`` over the layers of every frame (sum to 1 over L)."""
        b, n_layers, t, d = states.shape
        h = self.num_heads
        keys = self.key(states).view(b, n_layers, t, h, d // h)
        q = self.query.to(states.dtype).view(h, d // h)
        scores = torch.einsum("blthe,he->bthl", keys, q) / (d // h) ** 0.5
        return torch.softmax(scores, dim=-1)

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        b, n_layers, t, d = states.shape
        h = self.num_heads
        weights = self.attention(states)
        values = self.value(states).view(b, n_layers, t, h, d // h)
        pooled = torch.einsum("bthl,blthe->bthe", weights, values).reshape(b, t, d)
        return self.out(pooled)
