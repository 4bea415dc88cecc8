"""Streaming driver: align checkpoints, check them, and merge tensor by tensor.

Output keys, order, shapes and dtypes are exactly those of M1 (the first model), so
an ESPnet M1 gives a state dict that ESPnet loads with strict loading, and a bare
S3PRL (openai-whisper) M1 gives a checkpoint S3PRL's ``*_local`` upstreams
(``whisper.load_model``) load.

Tensors without a task vector ("head" tensors: present in the fine-tuned models but
not in the base, e.g. ``ctc.ctc_lo.*`` or ``frontend.featurizer.weights`` when the
base is a bare S3PRL upstream) are handled per method:

========== ============================================================
method     head tensors (no base counterpart)
========== ============================================================
lerp       interpolated like every other tensor (lerp needs no base)
ta         copied from M1
ties       copied from M1
sa         copied from M1, unless a schedule group's ``extra`` pattern names
           them: c * theta_1 + (1 - c) * theta_2, which is what the task-vector
           form gives for any base, since the weights sum to one
transfer   copied from M1 (the target model)
========== ============================================================

Integer/bool (any non-floating) tensors, e.g. ``num_batches_tracked`` or position
ids, are copied from M1 for every method. ``keep_m1`` regexes copy the matching
tensors from M1 without any check against the other inputs (e.g. ``^ctc\\.`` when
the token lists differ). In SA merging a tensor whose ratio is exactly 1 is M1's
bit for bit (layers no group lists), exactly 0 M2's.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
from pathlib import Path
from typing import Counter, Dict, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from espnet_delta.fileio import write_text_atomic

from . import ops
from .align import Aligned, Pattern, any_of, check_architectures, check_key_sets, check_tensors, drop_reinitialised
from .arch import attention_qkv_layer, num_layers
from .checkpoint import Checkpoint, PathLike, load_checkpoint, save_checkpoint
from .config import METHODS, MergeConfig, MergeReport
from .errors import ArchitectureMismatchError, MergeError, ScheduleError
from .schedule import CHILD, SchedulePlan, log_schedule, schedule_tsv

SCHEDULE_TSV = "merge_schedule.tsv"


def merge(
    models: Sequence[Checkpoint],
    config: MergeConfig,
    base: Optional[Checkpoint] = None,
    progress: bool = True,
    release_inputs: bool = False,
) -> tuple[Dict[str, torch.Tensor], MergeReport]:
    """Merge ``models`` (M1 first) into a new state dict in M1's key space.

    Tensors are processed one key at a time, so besides the inputs only the output
    and one tensor's temporaries are alive. With ``release_inputs`` each input
    tensor is dropped from its checkpoint once used (the inputs are consumed), which
    keeps peak memory near the size of the inputs even without memory-mapping.
    """
    config.check_inputs(len(models), base is not None)
    ref = models[0]
    if config.method == "lerp" and base is not None:
        logging.info("lerp does not use the base checkpoint %s", base.name)
        base = None
    others = [Aligned(m, ref, f"M{k + 1}") for k, m in enumerate(models[1:], start=1)]
    aligned_base = Aligned(base, ref, "base") if base is not None else None
    inputs = others + ([aligned_base] if aligned_base else [])
    arch = check_architectures(inputs, ref)
    keep = any_of(config.keep_m1)
    check_key_sets(ref, others, aligned_base, keep)
    if aligned_base is not None:
        drop_reinitialised(ref, aligned_base, any_of(config.reinit))
    check_tensors(ref, inputs, keep)

    report = MergeReport(config.method, arch, {}, collections.Counter())
    sa_ratio: Dict[str, float] = {}  # Q/K/V (and extra) key -> its c
    if config.method == "sa":
        sa_ratio = _sa_plan(ref, arch, config, keep, report)
    coefs = config.model_coefs(len(models))
    logging.info(
        "merging %d model(s) with %s%s; architecture: %s",
        len(models),
        config.method,
        f" (coefs {coefs})" if coefs else "",
        arch or "unknown",
    )

    out: Dict[str, torch.Tensor] = {}
    actions: Counter[str] = report.actions
    for key in tqdm(list(ref.state), desc=f"merge[{config.method}]", unit="tensor", disable=not progress):
        t1 = ref.state[key]
        result, action = _merge_one(key, t1, others, aligned_base, config, coefs, sa_ratio, keep)
        out[key] = result
        actions[action] += 1
        if release_inputs:
            for other in inputs:
                if other.has(key):
                    other.release(key)
            ref.state.pop(key)
    logging.info("merge done: %s", ", ".join(f"{k}={v}" for k, v in sorted(actions.items())))
    return out, report


def _sa_plan(
    ref: Checkpoint, arch: Optional[str], config: MergeConfig, keep: Pattern, report: MergeReport
) -> Dict[str, float]:
    """Resolve the schedule against M1, log its table and fill ``report``; returns the c of
    every tensor SA merging mixes (Q/K/V of listed layers and the groups' extra tensors)."""
    if arch is None:
        raise ArchitectureMismatchError(
            f"SA merging needs a known architecture; no name pattern matched M1 ({ref.name})"
        )
    schedule = config.sa_schedule()
    plan = schedule.plan(num_layers(arch, ref.arch_names()))
    ratio: Dict[str, float] = {}
    qkv = 0
    for key in ref.state:
        name = key if ref.prefixes is None else ref.upstream_name(key)
        where = None if name is None else attention_qkv_layer(arch, name)
        if where is not None:
            qkv += 1
            stack, layer = where
            if plan.rules[stack][layer] != CHILD:
                ratio[key] = plan.tables[stack][layer]
    if not qkv:
        raise ArchitectureMismatchError(f"SA merging found no attention Q/K/V tensors in M1 ({ref.name})")
    extra = _extra_tensors(ref, arch, plan, keep, schedule.source or "schedule")
    ratio.update({k: c for k, (c, _) in extra.items()})
    log_schedule(schedule, plan, extra)
    logging.info(
        "SA merge: %d of %d Q/K/V tensors and %d extra tensors are merged, all others come from M1",
        len(ratio) - len(extra), qkv, len(extra),
    )  # fmt: skip
    report.layer_coefs = plan.tables
    report.plan = plan
    report.extra_tensors = extra
    report.schedule_tsv = schedule_tsv(plan, extra)
    return ratio


def _extra_tensors(
    ref: Checkpoint, arch: str, plan: SchedulePlan, keep: Pattern, source: str
) -> Dict[str, Tuple[float, str]]:
    """M1 key -> (c, rule) for the groups' extra patterns; a pattern must match some
    floating-point tensor, and no tensor may be claimed twice (nor a Q/K/V one at all)."""
    extra: Dict[str, Tuple[float, str]] = {}
    for pattern, c, rule in plan.extra:
        regex = re.compile(pattern)
        hits = [
            k for k, t in ref.state.items()
            if regex.search(k) and t.is_floating_point() and not (keep and keep.search(k))
        ]  # fmt: skip
        if not hits:
            raise ScheduleError(f"{source}: extra pattern {pattern!r} of {rule} matches no tensor of M1 ({ref.name})")
        for key in hits:
            name = key if ref.prefixes is None else ref.upstream_name(key)
            if name is not None and attention_qkv_layer(arch, name):
                raise ScheduleError(
                    f"{source}: extra pattern {pattern!r} of {rule} matches the attention tensor '{key}', "
                    "which its layer's group sets; extra patterns are for other tensors"
                )
            if key in extra:
                raise ScheduleError(f"{source}: tensor '{key}' matches extra patterns of {extra[key][1]} and {rule}")
            extra[key] = (c, rule)
    return extra


def _merge_one(
    key: str,
    t1: torch.Tensor,
    others: Sequence[Aligned],
    base: Optional[Aligned],
    config: MergeConfig,
    coefs: Sequence[float],
    sa_ratio: Dict[str, float],
    keep: Pattern,
) -> tuple[torch.Tensor, str]:
    """(merged tensor, action) for one key; see the module docstring for the rules."""
    if keep is not None and keep.search(key):
        return t1, "keep_m1"
    if not t1.is_floating_point():
        return t1, "int_from_m1"
    in_base = base is not None and base.has(key)
    method = config.method
    if method == "lerp":
        return ops.lerp(t1, others[0].get(key), coefs[0]), "merged"
    b = base.get(key).to(t1.dtype) if in_base else None  # a float16 base is cast to M1's dtype
    if method == "sa":
        if key not in sa_ratio:
            return t1, "from_m1" if in_base else "head_from_m1"
        c = sa_ratio[key]
        if c == 1.0:
            return t1, "from_m1"
        if c == 0.0:
            return others[0].get(key), "from_m2"
        if b is None:
            return ops.lerp(t1, others[0].get(key), c), "merged"
        return ops.selective_attention(b, t1, others[0].get(key), c), "merged"
    if b is None:
        return t1, "head_from_m1"
    if method == "ta":
        return ops.task_arithmetic(b, [t1] + [o.get(key) for o in others], coefs), "merged"
    if method == "ties":
        thetas = [t1] + [o.get(key) for o in others]
        return ops.ties(b, thetas, config.ties_topk, config.ties_scale), "merged"
    return ops.transfer(t1, others[0].get(key), b, coefs[0]), "merged"  # transfer


def merge_files(
    model_paths: Sequence[PathLike],
    out_path: PathLike,
    config: MergeConfig,
    base_path: Optional[PathLike] = None,
    upstream_prefix: Optional[str] = None,
    allow_pickle: bool = False,
    progress: bool = True,
    schedule_out: Optional[PathLike] = None,
) -> MergeReport:
    """Load, merge and save; the output has M1's container (ESPnet, S3PRL or openai-whisper).

    SA merging also writes its per-layer c_i table to ``schedule_out`` (default:
    ``merge_schedule.tsv`` beside the merged model).
    """
    config.check_inputs(len(model_paths), base_path is not None)
    models = [load_checkpoint(p, str(p), upstream_prefix, allow_pickle) for p in model_paths]
    base = None
    if base_path is not None and config.method == "lerp":
        logging.info("lerp does not use the base checkpoint %s", base_path)
    elif base_path is not None:
        base = load_checkpoint(base_path, str(base_path), upstream_prefix, allow_pickle)
    template = dataclasses.replace(models[0], state={})
    state, report = merge(models, config, base, progress=progress, release_inputs=True)
    path = save_checkpoint(template, state, out_path)
    logging.info("wrote merged %s checkpoint to %s", template.container, path)
    if report.schedule_tsv:
        tsv = Path(schedule_out) if schedule_out is not None else Path(out_path).with_name(SCHEDULE_TSV)
        write_text_atomic(tsv, report.schedule_tsv)
        logging.info("wrote the SA schedule table to %s", tsv)
    return report


__all__ = ["METHODS", "SCHEDULE_TSV", "MergeConfig", "MergeError", "MergeReport", "merge", "merge_files"]
