"""Render the ESPnet configs of the fusion systems trained on cached features (stage 7).

    python -m espnet_delta.recipe.fusion_jobs --systems conf/fusion_systems.yaml \\
        --base_config conf/fusion.yaml --feats_dir dump/feats --data_dir data \\
        --train_set train --valid_set dev --token_list data/token_list/char/tokens.txt \\
        --exp_dir exp

writes ``<exp_dir>/fusion_<system>/train.yaml`` per system and prints the job
directories (one per line) for ``espnet_delta.recipe.train_jobs``. A system entry is
``{fusion, mode, deltas: [model names], fusion_conf: {...}}``; the reference is the
layout's reference model. ``warmup_fraction`` in the base config becomes a
``piecewiselinearwarmuplr`` schedule: linear warm-up over that fraction of all
steps, then linear decay to 0 at the last step (the authors' recipe).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import load_yaml, write_yaml_atomic
from espnet_delta.features.layout import FeatureLayout

SYSTEM_KEYS = {"fusion", "mode", "deltas", "fusion_conf", "reference"}


def count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def render_system(name: str, system: dict, base: dict, args) -> Path:
    unknown = set(system) - SYSTEM_KEYS
    if unknown:
        raise ValueError(f"{args.systems}: system {name!r} has unknown keys {sorted(unknown)}; allowed {sorted(SYSTEM_KEYS)}")
    train_feats = args.feats_dir / args.train_set
    valid_feats = args.feats_dir / args.valid_set
    layout_file = train_feats / "layout.json"
    layout = FeatureLayout.load(layout_file)
    config = copy.deepcopy(base)
    frontend_conf = dict(config.get("frontend_conf") or {})
    frontend_conf.update(
        layout=str(layout_file),
        reference=system.get("reference", layout.reference),
        deltas=list(system["deltas"]),
        mode=system.get("mode", "delta"),
        fusion=system["fusion"],
    )
    if system.get("fusion_conf"):
        frontend_conf["fusion_conf"] = system["fusion_conf"]
    config["frontend_conf"] = frontend_conf

    warmup_fraction = config.pop("warmup_fraction", None)
    if warmup_fraction is not None:
        if config.get("batch_type") not in ("sorted", "unsorted"):
            raise ValueError(f"{args.base_config}: warmup_fraction needs batch_type sorted/unsorted (a known step count)")
        steps_per_epoch = math.ceil(count_lines(train_feats / "feats.scp") / config["batch_size"])
        total = steps_per_epoch * config["max_epoch"] // config.get("accum_grad", 1)
        warmup = max(1, round(total * warmup_fraction))
        lr = config["optim_conf"]["lr"]
        config["scheduler_conf"] = {"warmup_steps_list": [0, warmup, total], "warmup_lr_list": [0.0, lr, 0.0]}

    config.update(
        token_type=args.token_type,
        token_list=str(args.token_list),
        use_preprocessor=True,
        train_data_path_and_name_and_type=[
            [str(train_feats / "feats.scp"), "speech", "kaldi_ark"],
            [str(args.data_dir / args.train_set / "text"), "text", "text"],
        ],
        valid_data_path_and_name_and_type=[
            [str(valid_feats / "feats.scp"), "speech", "kaldi_ark"],
            [str(args.data_dir / args.valid_set / "text"), "text", "text"],
        ],
        train_shape_file=[str(train_feats / "feats_shape")],
        valid_shape_file=[str(valid_feats / "feats_shape")],
    )
    job = args.exp_dir / f"fusion_{name}"
    write_yaml_atomic(config, job / "train.yaml")
    return job


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", type=Path, required=True, help="YAML: system name -> {fusion, mode, deltas, ...}")
    p.add_argument("--only", nargs="*", default=None, help="render only these systems")
    p.add_argument("--base_config", type=Path, required=True, help="ESPnet config shared by every system")
    p.add_argument("--feats_dir", type=Path, required=True, help="cached features: <feats_dir>/<set>/feats.scp")
    p.add_argument("--data_dir", type=Path, required=True, help="Kaldi data dirs: <data_dir>/<set>/text")
    p.add_argument("--train_set", required=True)
    p.add_argument("--valid_set", required=True)
    p.add_argument("--token_type", default="char")
    p.add_argument("--token_list", type=Path, required=True)
    p.add_argument("--exp_dir", type=Path, required=True)
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Prints the job directories on stdout (the stage engine reads them); logs go to stderr."""
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    systems = load_yaml(args.systems)
    base = load_yaml(args.base_config)
    names = args.only if args.only else list(systems)
    for name in names:
        if name not in systems:
            p.error(f"{args.systems}: no system {name!r} (has {sorted(systems)})")
        job = render_system(name, systems[name], base, args)
        logging.debug("%s: wrote %s", name, job / "train.yaml")
        print(job)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
