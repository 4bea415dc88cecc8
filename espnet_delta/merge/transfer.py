"""Task-vector transfer between whole models: theta_target + s * (theta_aug - theta_orig).

The augmentation task vector tau_aug = theta_aug - theta_orig is what fine-tuning with
augmentation changes in a model fine-tuned on the same corpus without it
(arXiv 2501.08468); adding s * tau_aug to a model fine-tuned on another corpus transfers
it. The per-tensor formulas are :func:`espnet_delta.merge.ops.task_vector` and
:func:`~espnet_delta.merge.ops.add_task_vector` (the merger's ``transfer`` method uses the
same two through :func:`~espnet_delta.merge.ops.transfer`); this module applies them to
plain state dicts with strict checks: every floating tensor of the target needs a task
vector, keys, shapes and dtypes must agree, integer buffers are the target's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping

import torch

from espnet_delta.fileio import torch_save_atomic
from espnet_delta.merge import ops

StateDict = Mapping[str, torch.Tensor]


def check_same_keys(a: StateDict, b: StateDict, what_a: str, what_b: str) -> None:
    """Same keys, shapes and dtypes, or an error naming the first differing tensor."""
    if a.keys() != b.keys():
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        key = (only_a or only_b)[0]
        raise KeyError(f"{what_a} and {what_b} differ in tensor '{key}' (only in {what_a}: {only_a[:3]}, "
                       f"only in {what_b}: {only_b[:3]})")
    for key, t in a.items():
        if t.shape != b[key].shape or t.dtype != b[key].dtype:
            raise ValueError(f"tensor '{key}': {what_a} has {tuple(t.shape)} {t.dtype}, "
                             f"{what_b} has {tuple(b[key].shape)} {b[key].dtype}")


def task_vector(theta_aug: StateDict, theta_orig: StateDict) -> Dict[str, torch.Tensor]:
    """tau = theta_aug - theta_orig for every floating tensor (both must hold the same keys and shapes)."""
    check_same_keys(theta_aug, theta_orig, "theta_aug", "theta_orig")
    return {k: ops.task_vector(t, theta_orig[k]) for k, t in theta_aug.items() if t.is_floating_point()}


def apply_task_vector(target: StateDict, tau: StateDict, scale: float) -> Dict[str, torch.Tensor]:
    """theta_target + scale * tau, tensor by tensor (:func:`espnet_delta.merge.ops.add_task_vector`:
    entries with a zero step keep the target's bits); tensors without a task vector (integer
    buffers) are the target's. Every floating tensor of the target needs one."""
    extra = sorted(set(tau) - set(target))
    if extra:
        raise KeyError(f"the task vector has tensor '{extra[0]}' that the target model lacks")
    out: Dict[str, torch.Tensor] = {}
    for key, t in target.items():
        if key not in tau:
            if t.is_floating_point():
                raise KeyError(f"the task vector lacks floating tensor '{key}' of the target model")
            out[key] = t
            continue
        if tau[key].shape != t.shape:
            raise ValueError(f"tensor '{key}': target {tuple(t.shape)}, task vector {tuple(tau[key].shape)}")
        out[key] = ops.add_task_vector(t, tau[key], scale)
    return out


def load_state(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict of tensors (``torch.load(weights_only=True)``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    return state


def transfer_file(target: Path, aug: Path, orig: Path, scale: float, out: Path) -> Path:
    """Write theta_target + scale * (theta_aug - theta_orig) to ``out`` (atomically)."""
    theta_t, theta_a, theta_o = load_state(target), load_state(aug), load_state(orig)
    check_same_keys(theta_t, theta_a, str(target), str(aug))
    torch_save_atomic(apply_task_vector(theta_t, task_vector(theta_a, theta_o), scale), out)
    return Path(out)
