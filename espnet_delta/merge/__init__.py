"""Model merging of fine-tuned checkpoints that share one pre-trained base.

Task vector: tau = theta_finetuned - theta_pretrained. M1 is the model fine-tuned
on child speech, M2 the one fine-tuned on adult speech.

* ``lerp``: theta = c * theta_1 + (1 - c) * theta_2
* ``ta`` (task arithmetic): theta = theta_base + sum_k c_k * tau_k
* ``ties``: trim, elect sign, disjoint mean of the task vectors (Yadav et al., 2023)
* ``sa`` (selective attention merge, arXiv 2501.08468): only the attention
  Q/K/V projections are merged, layer i as theta_base + c_i * tau_1 + (1 - c_i) * tau_2
  with the child weight c_i from a schedule (:mod:`.schedule`: two formulas, the
  authors' layer groups, explicit c_i); every other tensor comes from M1
* ``transfer``: theta = theta_target + s * (theta_aug - theta_orig)

Modules: :mod:`.checkpoint` (containers, key alignment), :mod:`.arch` (the name
table), :mod:`.schedule` and :mod:`.schedule_file` (SA ratios), :mod:`.ops`
(per-tensor formulas), :mod:`.config` (options, report), :mod:`.align` (checks),
:mod:`.merger` (the streaming driver), :mod:`.transfer` (task-vector transfer between
plain state dicts, strictly checked). CLI: ``python -m espnet_delta.bin.merge``.
"""

from .arch import NAME_PATTERNS, attention_qkv_layer, detect_architecture, num_layers
from .checkpoint import Checkpoint, from_object, load_checkpoint, save_checkpoint
from .config import METHODS, MergeConfig, MergeReport
from .errors import (
    ArchitectureMismatchError,
    CheckpointFormatError,
    KeyMismatchError,
    MergeError,
    ScheduleError,
    ShapeMismatchError,
)
from .merger import SCHEDULE_TSV, merge, merge_files
from .ops import add_task_vector, lerp, selective_attention, task_arithmetic, ties, transfer, trim_mask
from .schedule import FORMULAS, SCHEDULES, LayerGroup, Schedule, format_coefficient_table, layer_coefficients
from .schedule_file import load_schedule, resolve_schedule, schedule_from_object

__all__ = [
    "ArchitectureMismatchError",
    "Checkpoint",
    "CheckpointFormatError",
    "FORMULAS",
    "KeyMismatchError",
    "LayerGroup",
    "METHODS",
    "MergeConfig",
    "MergeError",
    "MergeReport",
    "NAME_PATTERNS",
    "SCHEDULES",
    "SCHEDULE_TSV",
    "Schedule",
    "ScheduleError",
    "ShapeMismatchError",
    "add_task_vector",
    "attention_qkv_layer",
    "detect_architecture",
    "format_coefficient_table",
    "from_object",
    "layer_coefficients",
    "lerp",
    "load_checkpoint",
    "load_schedule",
    "merge",
    "merge_files",
    "num_layers",
    "resolve_schedule",
    "save_checkpoint",
    "schedule_from_object",
    "selective_attention",
    "task_arithmetic",
    "ties",
    "transfer",
    "trim_mask",
]
