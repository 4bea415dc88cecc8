"""Per-tensor merge formulas. All take and return tensors of one parameter.

Arithmetic runs in float32 for half-precision inputs (float64 stays float64) and
the result is cast back to the input dtype. Terms with a zero coefficient are
skipped, so e.g. ``lerp(t1, t2, 1.0)`` returns ``t1`` bit-exactly (no ``-0.0``
flips, no NaN from ``0 * inf``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def weighted_sum(terms: Sequence[Tuple[float, torch.Tensor]], like: torch.Tensor) -> torch.Tensor:
    """sum_k c_k * t_k over the terms with c_k != 0, in ``like``'s dtype."""
    dtype = _compute_dtype(like.dtype)
    acc = torch.zeros(like.shape, dtype=dtype)
    first = True
    for coef, tensor in terms:
        if coef == 0.0:
            continue
        term = tensor.to(dtype) * coef
        if first:
            acc, first = term, False
        else:
            acc += term
    return acc.to(like.dtype)


def lerp(theta_1: torch.Tensor, theta_2: torch.Tensor, c: float) -> torch.Tensor:
    """c * theta_1 + (1 - c) * theta_2 (weight interpolation)."""
    return weighted_sum([(c, theta_1), (1.0 - c, theta_2)], theta_1)


def task_arithmetic(
    base: torch.Tensor, models: Sequence[torch.Tensor], coefs: Sequence[float]
) -> torch.Tensor:
    """theta_base + sum_k c_k * (theta_k - theta_base), one task vector at a time."""
    if len(models) != len(coefs):
        raise ValueError(f"{len(models)} models but {len(coefs)} coefficients")
    dtype = _compute_dtype(base.dtype)
    b = base.to(dtype)
    acc = b.clone()
    for coef, theta in zip(coefs, models):
        if coef != 0.0:
            acc += (theta.to(dtype) - b) * coef
    return acc.to(base.dtype)


def selective_attention(
    base: torch.Tensor, theta_1: torch.Tensor, theta_2: torch.Tensor, c: float
) -> torch.Tensor:
    """theta_base + c * tau_1 + (1 - c) * tau_2 for one Q/K/V tensor of a layer with ratio c.

    Since the weights sum to one this equals lerp(theta_1, theta_2, c) in exact
    arithmetic; the task-vector form is kept to follow the paper's definition.
    """
    return task_arithmetic(base, [theta_1, theta_2], [c, 1.0 - c])


def add_task_vector(target: torch.Tensor, tau: torch.Tensor, scale: float) -> torch.Tensor:
    """theta_target + scale * tau: apply a task vector (e.g. tau_aug = theta_aug - theta_orig)
    to another model's tensor. Entries where ``scale * tau`` is zero keep the target's
    bits exactly (no -0.0 + 0.0 = +0.0 flip), so a zero task vector is the identity."""
    if tau.shape != target.shape:
        raise ValueError(f"task vector of shape {tuple(tau.shape)} for a tensor of shape {tuple(target.shape)}")
    if scale == 0.0:
        return target
    dtype = _compute_dtype(target.dtype)
    step = tau.to(dtype) * scale
    moved = (target.to(dtype) + step).to(target.dtype)
    return torch.where(step != 0, moved, target)


def task_vector(theta: torch.Tensor, base: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """tau = theta - theta_base, in ``dtype`` (default: the compute dtype of ``theta``,
    float32 for half-precision inputs)."""
    if theta.shape != base.shape:
        raise ValueError(f"task vector of tensors of shape {tuple(theta.shape)} and {tuple(base.shape)}")
    dtype = dtype or _compute_dtype(theta.dtype)
    return theta.to(dtype) - base.to(dtype)


def transfer(
    target: torch.Tensor, donor: torch.Tensor, donor_base: torch.Tensor, scale: float
) -> torch.Tensor:
    """theta_target + scale * (theta_donor - theta_donor_base): move a task vector
    (e.g. "augmented minus plain fine-tuning" on one corpus) onto another model.
    :mod:`espnet_delta.merge.transfer` does the same for whole state dicts."""
    if scale == 0.0:
        return target
    return add_task_vector(target, task_vector(donor, donor_base, _compute_dtype(target.dtype)), scale)


def trim_mask(tau: torch.Tensor, topk: float) -> torch.Tensor:
    """Boolean mask of the entries of ``tau`` whose magnitude is among the top ``topk`` percent.

    k = ceil(n * topk / 100) entries are kept; entries tying with the k-th largest
    magnitude are kept too, which makes the result independent of sort tie-breaking.
    """
    n = tau.numel()
    k = math.ceil(n * topk / 100.0)
    if k >= n:
        return torch.ones_like(tau, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(tau, dtype=torch.bool)
    mag = tau.abs()
    threshold = mag.reshape(-1).kthvalue(n - k + 1).values
    return mag >= threshold


def ties(
    base: torch.Tensor, models: Sequence[torch.Tensor], topk: float = 20.0, scale: float = 1.0
) -> torch.Tensor:
    """TIES-merging (Yadav et al., 2023) of one tensor.

    1. trim: keep the top-``topk`` % magnitudes of each task vector (per tensor; the
       original thresholds over the whole model, which needs all task vectors at once);
    2. elect: per entry, the sign of the sum of the trimmed values, i.e. the sign
       with the larger total magnitude (an exact tie gives sign 0 and a zero update);
    3. disjoint mean: average only the trimmed values that agree with that sign;
    and return theta_base + scale * merged task vector.
    """
    if not models:
        raise ValueError("TIES needs at least one model")
    dtype = _compute_dtype(base.dtype)
    b = base.to(dtype)
    taus = []
    for theta in models:
        tau = theta.to(dtype) - b
        taus.append(tau * trim_mask(tau, topk))
    stacked = torch.stack(taus)
    del taus
    sign = torch.sign(stacked.sum(dim=0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    total = (stacked * agree).sum(dim=0)
    count = agree.sum(dim=0).clamp(min=1)
    merged = total / count
    return (b + merged * scale).to(base.dtype)
