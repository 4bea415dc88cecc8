"""Model merging of fine-tuned checkpoints that share one pre-trained base.

Task vector: tau = theta_finetuned - theta_pretrained. M1 is the model fine-tuned
on child speech, M2 the one fine-tuned on adult speech.

* ``lerp``: theta = c * theta_1 + (1 - c) * theta_2
* ``ta`` (task arithmetic): theta = theta_base + sum_k c_k * tau_k
* ``ties``: trim, elect sign, disjoint mean of the task vectors (Yadav et al., 2023)
* ``sa`` (selective attention merge, arXiv 2501.08468): only the attention
  Q/K/V projections are merged, layer i with ratio c_i that decays with depth
  (:mod:`.schedule`); every other tensor comes from M1
* ``transfer``: theta = theta_target + s * (theta_aug - theta_orig)

Modules: :mod:`.checkpoint` (containers, key alignment), :mod:`.arch` (the name
table), :mod:`.schedule` (SA ratios), :mod:`.ops` (per-tensor formulas),
:mod:`.merger` (the streaming driver). CLI: ``python -m espnet_delta.bin.merge``.
"""

from .arch import NAME_PATTERNS, attention_qkv_layer, detect_architecture, num_layers
from .checkpoint import Checkpoint, from_object, load_checkpoint, save_checkpoint
from .errors import (
    ArchitectureMismatchError,
    CheckpointFormatError,
    KeyMismatchError,
    MergeError,
    ShapeMismatchError,
)
from .merger import METHODS, MergeConfig, MergeReport, merge, merge_files
from .ops import lerp, selective_attention, task_arithmetic, ties, transfer, trim_mask
from .schedule import SCHEDULES, format_coefficient_table, layer_coefficients

__all__ = [
    "ArchitectureMismatchError",
    "Checkpoint",
    "CheckpointFormatError",
    "KeyMismatchError",
    "METHODS",
    "MergeConfig",
    "MergeError",
    "MergeReport",
    "NAME_PATTERNS",
    "SCHEDULES",
    "ShapeMismatchError",
    "attention_qkv_layer",
    "detect_architecture",
    "format_coefficient_table",
    "from_object",
    "layer_coefficients",
    "lerp",
    "load_checkpoint",
    "merge",
    "merge_files",
    "num_layers",
    "save_checkpoint",
    "selective_attention",
    "task_arithmetic",
    "ties",
    "transfer",
    "trim_mask",
]
