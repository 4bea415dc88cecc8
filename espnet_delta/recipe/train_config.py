"""The one training-config renderer: a base ESPnet config, per-model overrides, ``--set`` /
``--set-from`` values, the data keys and the warm-up schedule; written without ever
touching a trained job.

Every job family (fine-tuning, probe, interface, SSHR, Whisper, fusion, transfer) builds
its ``train.yaml`` here, so the data keys ESPnet reads (``train_data_path_and_name_and_type``
and its valid twin, the shape files, ``token_type``, ``token_list``, ``use_preprocessor``)
are written the same way for all. The order is: base, ``per_model.<name>``, ``--set-from``,
``--set``, then what the family sets.

A base may hold per-model training options in a top-level ``per_model`` mapping (model name
-> {dotted key: value}; the paper warms wav2vec2 up twice as long); ``per_model`` never
reaches the written config, which ESPnet would refuse.

``warmup_fraction`` becomes a ``piecewiselinearwarmuplr`` schedule (linear warm-up over that
fraction of all steps, then linear decay to 0 at the last step), counting batches as ESPnet's
fixed-size samplers do: ``max(N // batch_size, 1)`` per epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from espnet_delta.fileio import count_lines, load_yaml, set_dotted, write_yaml_atomic
from espnet_delta.recipe.names import TRAIN_CONFIG, is_trained

PER_MODEL = "per_model"
FIXED_BATCH_TYPES = ("sorted", "unsorted")  # ESPnet samplers with a known number of batches


def per_model_overrides(config: Dict[str, Any], name: Optional[str], where: Path) -> Dict[str, Any]:
    """Remove ``per_model`` from ``config``; return the {dotted key: value} overrides of ``name``."""
    table = config.pop(PER_MODEL, None)
    if table is None:
        return {}
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"{where}: {PER_MODEL} must map model names to {{dotted.key: value}} mappings")
    if name is None:
        logging.debug("%s: no model name given; %s entries %s not applied", where, PER_MODEL, sorted(table))
        return {}
    if name not in table:
        logging.debug("%s: no %s entry for %r (has %s); the base values apply", where, PER_MODEL, name, sorted(table))
        return {}
    return dict(table[name])


def parse_set(item: str) -> Tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, VALUE parsed as YAML: ``3`` an int, ``[a, b]`` a list, ``null`` None)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    return key, yaml.safe_load(value)


def parse_set_from(item: str) -> Tuple[Path, str, str]:
    """``FILE:ENTRY=KEY`` -> (FILE, ENTRY, KEY)."""
    source, _, rest = item.partition(":")
    entry, sep, key = rest.partition("=")
    if not source or not sep or not entry or not key:
        raise ValueError(f"--set-from expects FILE:ENTRY=KEY, got {item!r}")
    return Path(source), entry, key


def render(base: Path, per_model: Optional[str] = None, set_from: Sequence[str] = (),
           sets: Sequence[str] = ()) -> Dict[str, Any]:
    """The base config with its ``per_model`` entry, ``set_from`` (FILE:ENTRY=KEY) and ``sets`` (KEY=VALUE) applied."""
    config = load_yaml(base)
    for key, value in per_model_overrides(config, per_model, base).items():
        set_dotted(config, str(key), value)
    for item in set_from:
        source, entry, key = parse_set_from(item)
        table = load_yaml(source)
        if entry not in table:
            raise ValueError(f"{source}: no entry {entry!r} (has {sorted(table)})")
        set_dotted(config, key, table[entry])
    for item in sets:
        set_dotted(config, *parse_set(item))
    return config


def data_keys(data_dir: Path, shape_dir: Path, train_set: str, valid_set: str, token_type: str, token_list: Path,
              text_name: str = "text", feats_dir: Optional[Path] = None) -> Dict[str, Any]:
    """ESPnet's data keys: waveforms (``sound``, shapes from ``shape_dir``) or, with ``feats_dir``,
    cached features (``kaldi_ark``, ``<feats_dir>/<set>/feats.scp`` and ``feats_shape``)."""

    def speech(set_name: str) -> List[str]:
        if feats_dir is not None:
            return [str(feats_dir / set_name / "feats.scp"), "speech", "kaldi_ark"]
        return [str(data_dir / set_name / "wav.scp"), "speech", "sound"]

    def shape(set_name: str) -> str:
        if feats_dir is not None:
            return str(feats_dir / set_name / "feats_shape")
        return str(shape_dir / set_name / "speech_shape")

    def data(set_name: str) -> List[List[str]]:
        return [speech(set_name), [str(data_dir / set_name / text_name), "text", "text"]]

    return {
        "token_type": token_type,
        "token_list": str(token_list),
        "use_preprocessor": True,
        "train_data_path_and_name_and_type": data(train_set),
        "valid_data_path_and_name_and_type": data(valid_set),
        "train_shape_file": [shape(train_set)],
        "valid_shape_file": [shape(valid_set)],
    }


def warmup_steps(n_train: int, batch_size: int, max_epoch: int, accum_grad: int, fraction: float) -> Tuple[int, int]:
    """(warm-up steps, total steps) as ESPnet's fixed-size samplers count batches."""
    steps_per_epoch = max(n_train // batch_size, 1)
    total = max(steps_per_epoch * max_epoch // accum_grad, 1)
    warmup = min(max(1, round(total * fraction)), total)
    return warmup, total


def warmup_schedule(config: Dict[str, Any], n_train: int, where: Path) -> None:
    """Replace ``warmup_fraction`` by piecewise-linear warm-up/decay steps (module docstring)."""
    fraction = config.pop("warmup_fraction", None)
    if fraction is None:
        return
    if config.get("batch_type") not in FIXED_BATCH_TYPES or "batch_size" not in config:
        raise ValueError(f"{where}: warmup_fraction needs batch_type sorted or unsorted and batch_size "
                         "(a known number of steps)")
    warmup, total = warmup_steps(n_train, config["batch_size"], config["max_epoch"], config.get("accum_grad", 1),
                                 fraction)
    lr = config["optim_conf"]["lr"]
    config["scheduler"] = "piecewiselinearwarmuplr"
    config["scheduler_conf"] = {"warmup_steps_list": [0, warmup, total], "warmup_lr_list": [0.0, lr, 0.0]}


def warmup_from_lines(config: Dict[str, Any], lines_file: Path, where: Path) -> None:
    """:func:`warmup_schedule` with N = the non-empty lines of ``lines_file`` (a shape file or scp)."""
    if "warmup_fraction" in config:
        warmup_schedule(config, count_lines(lines_file), where)


def with_seed(config: Dict[str, Any], seed: int) -> Dict[str, Any]:
    """``config`` with ESPnet's ``seed:`` (random init, data order, dropout) set to ``seed``; seed 0,
    ESPnet's default, returns ``config`` itself, so a one-seed run renders what it always did
    (``--seeds``, docs/recipes.md)."""
    if int(seed) == 0:
        return config
    return {**config, "seed": int(seed)}


#: the un-capped rendering of a dry-run job (docs/dry_run.md), beside its capped train.yaml
FULL_CONFIG = "train.full.yaml"
#: ESPnet batch types whose ``batch_size`` counts utterances (the dry run's batch cap)
UTTERANCE_BATCH_TYPES = ("unsorted", "sorted", "folded")
#: ESPnet batch types whose ``batch_bins`` counts input samples (the dry run's bins cap)
BIN_BATCH_TYPES = ("numel", "length")


def dry_run_cap(config: Dict[str, Any], steps: int, max_batch: int = 0, max_bins: int = 0) -> Dict[str, Any]:
    """``config`` capped to ``steps`` optimizer steps, everything else (model, batch size,
    schedule) as it is: one epoch (``max_epoch: 1``) of ``steps x accum_grad`` iterations
    (``num_iters_per_epoch``; ESPnet steps the optimizer once per ``accum_grad`` iterations).
    ``max_batch`` > 0: also at most that many utterances per batch where the config counts its batch
    in utterances (``batch_size``; not ``numel``/``length`` bins), for a machine that cannot hold the
    paper's batch (Whisper-small's 16 padded 30-s windows on a CPU); ``max_bins`` > 0: the same for
    configs that count ``batch_bins`` (``numel``/``length``: WavLM Large's 4,000,000 samples with
    augmentation). The report scales the measured rate back by full / capped."""
    capped = dict(config)
    capped["max_epoch"] = 1
    capped["num_iters_per_epoch"] = int(steps) * int(config.get("accum_grad", 1) or 1)
    if max_batch > 0 and config.get("batch_type", "folded") in UTTERANCE_BATCH_TYPES \
            and int(config.get("batch_size", 0) or 0) > max_batch:
        capped["batch_size"] = int(max_batch)
    if max_bins > 0 and config.get("batch_type") in BIN_BATCH_TYPES \
            and int(config.get("batch_bins", 0) or 0) > max_bins:
        capped["batch_bins"] = int(max_bins)
    return capped


def write_job_config(job: Path, config: Dict[str, Any], checkpoint: Optional[str] = None,
                     name: str = TRAIN_CONFIG) -> bool:
    """Write ``<job>/<name>`` (``train.yaml``) unless the job is trained (or training): a trained job's
    config is never rewritten; a differing new rendering is only named in a warning. True if written."""
    out = job / name
    if is_trained(job, checkpoint) and out.is_file():
        if load_yaml(out) != config:
            logging.warning("%s: the job is trained; its config differs from the new rendering and is kept "
                            "(remove the job dir to train it again)", out)
        return False
    if out.is_file() and load_yaml(out) == config:
        return False
    write_yaml_atomic(config, out)
    logging.debug("wrote %s", out)
    return True
