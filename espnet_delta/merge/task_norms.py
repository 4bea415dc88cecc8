"""How large a fine-tuned model's task vector is next to the pre-trained base it started from.

Task-vector merging (arXiv 2501.08468 and the task-arithmetic line it builds on) assumes the
task vectors tau = theta_ft - theta_base are small next to a shared, strong base. This module
measures that premise from the checkpoints: the relative norm ``||tau||_2 / ||theta_base||_2``,
one global L2 norm over a set of tensors (all their entries flattened into one vector, not a
mean of per-tensor ratios), for two sets:

* ``sa``: the attention Q/K/V projections (weights and biases) of every layer, the tensors SA
  merging mixes (:func:`espnet_delta.merge.arch.attention_qkv_layer`);
* ``all``: every floating-point tensor that has a base counterpart, i.e. has a task vector:
  with a bare S3PRL base all the upstream's tensors (the CTC head has none), the tensors
  task arithmetic and TIES merge.

Keys are aligned exactly as merging aligns them (:class:`espnet_delta.merge.align.Aligned`),
so an ESPnet checkpoint is measured against a bare S3PRL (or openai-whisper) base.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch

from .align import Aligned, any_of, check_architectures, drop_reinitialised
from .arch import attention_qkv_layer
from .checkpoint import Checkpoint, PathLike, load_checkpoint
from .errors import ShapeMismatchError

SUBSETS = ("sa", "all")


@dataclasses.dataclass
class TaskNorm:
    """Sums of squares per subset; ``relative`` = sqrt(tau_sq / base_sq)."""

    tau_sq: dict = dataclasses.field(default_factory=lambda: {s: 0.0 for s in SUBSETS})
    base_sq: dict = dataclasses.field(default_factory=lambda: {s: 0.0 for s in SUBSETS})
    tensors: dict = dataclasses.field(default_factory=lambda: {s: 0 for s in SUBSETS})

    def relative(self, subset: str) -> float:
        """``||tau||_2 / ||theta_base||_2`` over ``subset``; NaN when it holds no tensor (or a zero base)."""
        if not self.tensors[subset] or self.base_sq[subset] == 0.0:
            return math.nan
        return math.sqrt(self.tau_sq[subset] / self.base_sq[subset])

    def tau_norm(self, subset: str) -> float:
        return math.sqrt(self.tau_sq[subset])


def task_norm(model: Checkpoint, base: Checkpoint, reinit: Sequence[str] = ()) -> TaskNorm:
    """The task vector of ``model`` against ``base``, measured per subset (module docstring).

    ``reinit``: regexes of tensors re-created at fine-tuning with another shape (no task vector),
    as in :class:`espnet_delta.merge.MergeConfig`; any other shape mismatch is refused by name.
    """
    aligned = Aligned(base, model, "base")
    arch = check_architectures([aligned], model)
    drop_reinitialised(model, aligned, any_of(reinit))
    out = TaskNorm()
    for key, theta in model.state.items():
        if not aligned.has(key) or not theta.is_floating_point():
            continue
        b = aligned.get(key)
        if b.shape != theta.shape:
            raise ShapeMismatchError(f"tensor {aligned.describe(key)}: {model.name} has {tuple(theta.shape)}, "
                                     f"the base ({base.name}) {tuple(b.shape)}", key)  # fmt: skip
        b64 = b.to(torch.float64)
        tau_sq = float((theta.to(torch.float64) - b64).pow(2).sum())
        base_sq = float(b64.pow(2).sum())
        name = key if model.prefixes is None else model.upstream_name(key)
        subsets = ["all"]
        if arch is not None and name is not None and attention_qkv_layer(arch, name) is not None:
            subsets.append("sa")
        for s in subsets:
            out.tau_sq[s] += tau_sq
            out.base_sq[s] += base_sq
            out.tensors[s] += 1
    return out


def task_norm_files(model_path: PathLike, base_path: PathLike, reinit: Sequence[str] = (),
                    upstream_prefix: Optional[str] = None) -> TaskNorm:
    """:func:`task_norm` of two files (read with ``weights_only=True``, memory-mapped)."""
    model = load_checkpoint(model_path, str(model_path), upstream_prefix)
    base = load_checkpoint(base_path, str(base_path), upstream_prefix)
    return task_norm(model, base, reinit)
