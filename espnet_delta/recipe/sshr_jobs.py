"""Render the ESPnet configs of the SSHR systems (stage 4, ``--sshr_systems``).

    python -m espnet_delta.recipe.sshr_jobs --systems conf/sshr_systems.yaml --base_config conf/sshr.yaml \\
        --upstream_conf conf/upstreams.yaml --reference wavlm --data_dir data --shape_dir dump/shapes \\
        --train_set train --valid_set dev --unit char --token_list data/token_list/char/tokens.txt --exp_dir exp

writes ``<exp_dir>/sshr_<system>_<unit>/train.yaml`` per system and prints the job
directories (one per line) for ``espnet_delta.recipe.train_jobs``. Every system fine-tunes
the upstream entry ``--reference`` of ``--upstream_conf`` with ``frontend: sshr`` +
``encoder: sshr`` (:mod:`espnet_delta.asr.encoder.sshr`); a system entry sets SSHR's options::

    baseline: {language_frame: false}
    full: {layer: 2, language_frame: true, replace_layers: [6], cross_ctc_layers: [4, 5], interctc_weight: 0.3}

``layer`` (the split point and language-frame layer k) goes to both ``frontend_conf.layer``
and ``encoder_conf.language_frame_layer``, so they cannot disagree; ``language_frame``,
``drop_layers``, ``replace_layers``, ``cross_ctc_layers``, ``cross_ctc_heads`` go to
``encoder_conf``, ``interctc_weight`` to ``model_conf``; ``units`` restricts the system to
some of ``char``/``phn``. Units, data files and model selection are those of the
layer-interface systems (:data:`espnet_delta.recipe.interface_jobs.UNITS`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import load_yaml
from espnet_delta.recipe.interface_jobs import UNITS, upstream_entry, write_train_config

JOB_PREFIX = "sshr_"
ENCODER_KEYS = ("language_frame", "drop_layers", "replace_layers", "cross_ctc_layers", "cross_ctc_heads")
SYSTEM_KEYS = {"layer", "interctc_weight", "units", *ENCODER_KEYS}


def render_system(name: str, system: Dict[str, Any], base: Dict[str, Any], upstream: Dict[str, Any], args) -> Path:
    unknown = set(system) - SYSTEM_KEYS
    if unknown:
        raise ValueError(f"{args.systems}: system {name!r} has unknown keys {sorted(unknown)}; allowed {sorted(SYSTEM_KEYS)}")
    if base.get("frontend") != "sshr" or base.get("encoder") != "sshr":
        raise ValueError(f"{args.base_config}: SSHR systems need 'frontend: sshr' and 'encoder: sshr'")
    token_type, text_name, criterion = UNITS[args.unit]
    config = copy.deepcopy(base)
    frontend_conf = dict(config.get("frontend_conf") or {}, upstream=dict(upstream))
    encoder_conf = dict(config.get("encoder_conf") or {}, upstream=dict(upstream))
    layer = system.get("layer", frontend_conf.get("layer", encoder_conf.get("language_frame_layer")))
    if layer is None:
        raise ValueError(f"{args.systems}: system {name!r}: no 'layer' (here or in {args.base_config}'s frontend_conf)")
    frontend_conf["layer"] = encoder_conf["language_frame_layer"] = int(layer)
    encoder_conf.update({k: system[k] for k in ENCODER_KEYS if k in system})
    config["frontend_conf"], config["encoder_conf"] = frontend_conf, encoder_conf
    if "interctc_weight" in system:
        config["model_conf"] = dict(config.get("model_conf") or {}, interctc_weight=float(system["interctc_weight"]))
    return write_train_config(config, args, f"{JOB_PREFIX}{name}_{args.unit}", token_type, text_name, criterion)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", type=Path, required=True, help="YAML: system name -> SSHR options")
    p.add_argument("--base_config", type=Path, required=True, help="ESPnet config shared by every system")
    p.add_argument("--upstream_conf", type=Path, required=True, help="YAML: name -> {upstream, path_or_url}")
    p.add_argument("--reference", required=True, help="the upstream entry every system fine-tunes")
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--shape_dir", type=Path, required=True, help="<shape_dir>/<set>/speech_shape")
    p.add_argument("--train_set", required=True)
    p.add_argument("--valid_set", required=True)
    p.add_argument("--unit", choices=sorted(UNITS), required=True)
    p.add_argument("--token_list", type=Path, required=True)
    p.add_argument("--exp_dir", type=Path, required=True)
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Prints the job directories on stdout (the stage engine reads them); logs go to stderr."""
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    systems = load_yaml(args.systems)
    base = load_yaml(args.base_config)
    upstream = upstream_entry(load_yaml(args.upstream_conf), args.reference, args.upstream_conf)
    for name, system in systems.items():
        system = dict(system or {})
        if args.unit not in system.get("units", sorted(UNITS)):
            continue
        job = render_system(name, system, base, upstream, args)
        logging.info("wrote %s", job / "train.yaml")
        print(job)


if __name__ == "__main__":
    sys.exit(main())
