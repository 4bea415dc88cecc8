"""Per-utterance gate statistics of the mixture-of-experts fusion systems.

:class:`espnet_delta.fusion.MoEFusion` keeps the gate weights of its last forward
pass in ``last_gate`` ``(B, T, 1 + K)`` (softmax over the reference and the K
other models, per frame). Running a trained system on cached features and
averaging each utterance's weights over its valid frames (``t < length``) gives one
point per utterance and expert; their histogram shows whether the gate uses the
delta streams at all and whether it routes utterances differently.

Stage 9 writes these means per MoE system and test set as
``<job>/decode/<set>/gate_means.tsv`` (:func:`write_gate_means`): header
``utt_id<TAB><reference><TAB><other models...>`` with the expert names of the
system's ``frontend_conf`` (Table 5 of arXiv 2601.20142 reports the mean weight on
the fine-tuned reference stream).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_delta.analysis.outputs import file_fingerprint, load_cache, save_cache
from espnet_delta.fileio import load_yaml, read_table, write_text_atomic

#: Per-utterance mean gate weights of one MoE system on one test set, in ``<job>/decode/<set>/``.
GATE_MEANS_FILE = "gate_means.tsv"


def utterance_gate_means(gate: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """``[B, E]`` mean of ``gate (B, T, E)`` over the first ``lengths[b]`` frames of each item."""
    if gate.dim() != 3 or gate.size(0) != lengths.numel():
        raise ValueError(f"gate of shape {tuple(gate.shape)} does not fit {lengths.numel()} lengths")
    lengths = lengths.to(gate.device).clamp(max=gate.size(1))
    if int(lengths.min()) < 1:
        raise ValueError("an utterance has no frames; its mean gate weight is undefined")
    valid = (torch.arange(gate.size(1), device=gate.device)[None, :] < lengths[:, None]).to(gate.dtype)
    sums = (gate * valid.unsqueeze(-1)).sum(1)
    return (sums / lengths[:, None].to(gate.dtype)).double().cpu().numpy()


def is_moe_config(config: Path) -> bool:
    """True when an ESPnet config's frontend fuses with ``moe``."""
    return (load_yaml(config).get("frontend_conf") or {}).get("fusion") == "moe"


def moe_systems(exp_dir: Path, model_name: str) -> List[Tuple[str, Path]]:
    """``(system, job dir)`` of every ``fusion_<system>`` whose config fuses with ``moe`` and
    whose model file exists."""
    systems = []
    for config in sorted(Path(exp_dir).glob("fusion_*/config.yaml")):
        if not is_moe_config(config):
            continue
        job = config.parent
        if not (job / model_name).is_file():
            logging.warning("%s: MoE system without %s (not trained yet?); no gate histogram", job, model_name)
            continue
        systems.append((job.name[len("fusion_"):], job))
    return systems


def expert_labels(frontend, n_experts: int) -> List[str]:
    """Names of the gate's experts: the reference, then the other models (delta or full)."""
    reference = getattr(frontend, "reference", None)
    others = getattr(frontend, "deltas", None)
    mode = getattr(frontend, "mode", "delta")
    if reference is None or others is None or len(others) + 1 != n_experts:
        return [f"expert {k}" for k in range(n_experts)]
    prefix = "delta " if mode == "delta" else ""
    return [f"{reference} (ft)"] + [f"{prefix}{o}" for o in others]


def expert_names(frontend) -> List[str]:
    """The gate's experts as the system's ``frontend_conf`` names them: the reference, then
    each other model (its delta stream with ``mode: delta``)."""
    reference = getattr(frontend, "reference", None)
    others = getattr(frontend, "deltas", None)
    if not isinstance(reference, str) or not isinstance(others, list) or not all(isinstance(o, str) for o in others):
        raise RuntimeError(f"{type(frontend).__name__}: no expert names (reference, deltas) to label the gate with")
    return [reference, *others]


def find_moe(model):
    from espnet_delta.fusion import MoEFusion

    found = [m for m in model.modules() if isinstance(m, MoEFusion)]
    if len(found) != 1:
        raise RuntimeError(f"expected one MoE fusion module in the model, found {len(found)}")
    return found[0]


@torch.no_grad()
def model_gate_means(model, feats_scp: Path, batch_size: int = 8, device: str = "cpu", desc: str = "gates"):
    """``(utt ids, means [n_utts, 1 + K])`` of a loaded MoE fusion model on cached features."""
    from tqdm import tqdm

    from espnet_delta.asr.decoding import batches, read_entries

    moe = find_moe(model)
    entries = read_entries(feats_scp)
    utts, means = [], []
    with tqdm(total=len(entries), unit="utt", desc=desc, leave=False) as bar:
        for keys, feats, lengths in batches(entries, "kaldi_ark", batch_size):
            moe.last_gate = None
            _, enc_lens = model.encode(feats.to(device), lengths.to(device))
            if moe.last_gate is None:
                raise RuntimeError(f"{feats_scp}: the MoE fusion did not run in model.encode")
            means.append(utterance_gate_means(moe.last_gate, lengths))
            utts += keys
            bar.update(len(keys))
    if not utts:
        raise ValueError(f"{feats_scp}: no utterances")
    return utts, np.concatenate(means)


def collect_gate_means(job: Path, model_name: str, feats_scp: Path, batch_size: int = 8, device: str = "cpu"):
    """``(utt ids, means [n_utts, 1 + K], expert labels)`` of one system on one feature set."""
    from espnet_delta.asr.decoding import load_model

    model = load_model(job / "config.yaml", job / model_name, device)
    utts, means = model_gate_means(model, feats_scp, batch_size, device, desc=f"gates {job.name}")
    labels = expert_labels(model.frontend, means.shape[1])
    return utts, means, labels


def gate_means_cached(job: Path, model_name: str, feats_scp: Path, cache: Path, batch_size: int, device: str):
    """:func:`collect_gate_means`, cached against the model file, config and features."""
    inputs = {
        "model": file_fingerprint(job / model_name),
        "config": file_fingerprint(job / "config.yaml"),
        "feats_scp": file_fingerprint(feats_scp),
    }
    cached = load_cache(cache, inputs)
    if cached is not None:
        logging.info("%s: gate statistics up to date (%s)", job, cache)
        return cached["utts"], np.asarray(cached["means"], dtype=np.float64), cached["labels"]
    utts, means, labels = collect_gate_means(job, model_name, feats_scp, batch_size, device)
    save_cache(cache, inputs, {"utts": utts, "means": means.tolist(), "labels": labels})
    return utts, means, labels


def format_gate_table(utts: Sequence[str], means: np.ndarray, labels: Sequence[str]) -> str:
    lines = ["\t".join(["utt", *labels])]
    for utt, row in sorted(zip(utts, means.tolist())):
        lines.append("\t".join([utt, *(f"{v:.6f}" for v in row)]))
    return "\n".join(lines) + "\n"


def gate_sets(feats_dir: Path, sets: Sequence[str]) -> List[Tuple[str, Path]]:
    """``(set, feats.scp)`` of the sets whose cached features exist (others logged and skipped)."""
    found = []
    for name in sets:
        scp = Path(feats_dir) / name / "feats.scp"
        if scp.is_file():
            found.append((name, scp))
        else:
            logging.warning("%s missing: no gate histograms on %s", scp, name)
    return found


def describe(means: np.ndarray, labels: Sequence[str]) -> Optional[str]:
    return ", ".join(f"{label} {m:.3f}" for label, m in zip(labels, means.mean(0))) if len(means) else None


def format_gate_means(utts: Sequence[str], means: np.ndarray, names: Sequence[str]) -> str:
    """``gate_means.tsv``: header ``utt_id<TAB><names...>``, one row per utterance sorted by id."""
    means = np.asarray(means, dtype=np.float64)
    if means.shape != (len(utts), len(names)):
        raise ValueError(f"means of shape {means.shape} do not fit {len(utts)} utterances x {len(names)} experts")
    lines = ["\t".join(["utt_id", *names])]
    for utt, row in sorted(zip(utts, means.tolist())):
        lines.append("\t".join([utt, *(f"{v:.6f}" for v in row)]))
    return "\n".join(lines) + "\n"


def write_gate_means_file(path: Path, utts: Sequence[str], means: np.ndarray, names: Sequence[str]) -> Path:
    """Write :func:`format_gate_means` atomically (a reader never sees a partial table)."""
    return write_text_atomic(path, format_gate_means(utts, means, names))


def _mtime_ns(path: Path) -> int:
    """Latest of a file's and, for a symlink (ESPnet's ``valid.*.best.pth``), its target's mtime."""
    return max(os.lstat(path).st_mtime_ns, os.stat(path).st_mtime_ns)


def gate_means_up_to_date(tsv: Path, feats_scp: Path, inputs: Sequence[Path]) -> bool:
    """True when ``tsv`` holds one row for each utterance of ``feats_scp`` and is not older
    than any of ``inputs`` (the model file, its config, the features)."""
    if not tsv.is_file():
        return False
    if any(_mtime_ns(tsv) < _mtime_ns(p) for p in inputs):
        return False
    lines = tsv.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t")[0] != "utt_id":
        return False
    rows = [line.split("\t", 1)[0] for line in lines[1:]]
    return sorted(rows) == sorted(row.key for row in read_table(feats_scp, what="scp"))


def write_gate_means(job: Path, model_name: str, tests: Sequence[Tuple[str, Path]], batch_size: int = 8,
                     device: str = "cpu") -> List[Path]:
    """Write the missing or outdated ``<job>/decode/<set>/gate_means.tsv`` of one MoE system
    for each ``(set, feats.scp)``; a system that is not MoE is skipped. Returns the paths written."""
    from espnet_delta.asr.decoding import load_model

    config, model_file = job / "config.yaml", job / model_name
    for path in (config, model_file):
        if not path.exists():
            raise FileNotFoundError(f"{job}: {path.name} not found: {path} (is the system trained?)")
    if not is_moe_config(config):
        logging.info("%s: not a MoE fusion system; no gate means", job)
        return []
    model, written = None, []
    for name, scp in tests:
        out = job / "decode" / name / GATE_MEANS_FILE
        if gate_means_up_to_date(out, scp, [model_file, config, scp]):
            logging.info("%s %s: %s is up to date", job, name, out)
            continue
        if model is None:
            model = load_model(config, model_file, device)
            names = expert_names(model.frontend)
        utts, means = model_gate_means(model, scp, batch_size, device, desc=f"gates {job.name} {name}")
        write_gate_means_file(out, utts, means, names)
        logging.info("%s %s: wrote %s (%d utterances; mean %s)", job, name, out, len(utts),
                     ", ".join(f"{n} {m:.3f}" for n, m in zip(names, means.mean(0))))
        written.append(out)
    return written
