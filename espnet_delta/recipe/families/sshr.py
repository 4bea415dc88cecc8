"""SSHR systems (stage 4, ``--sshr_systems``; arXiv 2309.16937): ``sshr_<system>_<unit>``, each
fine-tuning the reference with ``frontend: sshr`` + ``encoder: sshr``
(:mod:`espnet_delta.asr.encoder.sshr`). A system entry sets SSHR's options::

    baseline: {language_frame: false}
    full: {layer: 2, language_frame: true, replace_layers: [6], cross_ctc_layers: [4, 5], interctc_weight: 0.3}

``layer`` (the split point and language-frame layer k) goes to both ``frontend_conf.layer``
and ``encoder_conf.language_frame_layer``, so they cannot disagree; ``language_frame``,
``drop_layers``, ``replace_layers``, ``cross_ctc_layers``, ``cross_ctc_heads`` go to
``encoder_conf``, ``interctc_weight`` to ``model_conf``; ``units`` restricts the system to
some of ``char``/``phn``. Units, data files and model selection are those of the
layer-interface systems (:data:`espnet_delta.recipe.names.UNITS`).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from espnet_delta.fileio import load_yaml
from espnet_delta.recipe.families import load_systems, system_units, unit_text, upstream_entry
from espnet_delta.recipe.names import UNIT_CHECKPOINTS, Job, sshr_dir
from espnet_delta.recipe.train_config import data_keys, warmup_from_lines

FAMILY = "sshr"
ENCODER_KEYS = ("language_frame", "drop_layers", "replace_layers", "cross_ctc_layers", "cross_ctc_heads")
SYSTEM_KEYS = {"layer", "interctc_weight", "units", *ENCODER_KEYS}


def render_system(settings, name: str, system: Dict[str, Any], unit: str) -> Dict[str, Any]:
    base = load_yaml(settings.sshr_config)
    if base.get("frontend") != "sshr" or base.get("encoder") != "sshr":
        raise ValueError(f"{settings.sshr_config}: SSHR systems need 'frontend: sshr' and 'encoder: sshr'")
    upstream = upstream_entry(load_yaml(settings.upstream_conf), settings.upstreams[0], settings.upstream_conf)
    token_type, text_name, token_list, criterion = unit_text(settings, unit)
    config = copy.deepcopy(base)
    frontend_conf = dict(config.get("frontend_conf") or {}, upstream=dict(upstream))
    encoder_conf = dict(config.get("encoder_conf") or {}, upstream=dict(upstream))
    layer = system.get("layer", frontend_conf.get("layer", encoder_conf.get("language_frame_layer")))
    if layer is None:
        raise ValueError(f"{settings.sshr_systems}: system {name!r}: no 'layer' (here or in "
                         f"{settings.sshr_config}'s frontend_conf)")
    frontend_conf["layer"] = encoder_conf["language_frame_layer"] = int(layer)
    encoder_conf.update({k: system[k] for k in ENCODER_KEYS if k in system})
    config["frontend_conf"], config["encoder_conf"] = frontend_conf, encoder_conf
    if "interctc_weight" in system:
        config["model_conf"] = dict(config.get("model_conf") or {}, interctc_weight=float(system["interctc_weight"]))
    if criterion is not None:
        config["best_model_criterion"] = criterion
    warmup_from_lines(config, settings.shape_dir / settings.train_set / "speech_shape", settings.sshr_config)
    config.update(data_keys(settings.data_dir, settings.shape_dir, settings.train_set, settings.valid_set, token_type,
                            token_list, text_name))
    return config


def jobs(settings) -> List[Job]:
    if not settings.sshr_systems:
        return []
    systems = load_systems(settings.sshr_systems)
    out = []
    for unit in settings.sshr_units:
        for name, system in systems.items():
            if unit not in system_units(settings.sshr_systems, name, system):
                continue
            unknown = set(system) - SYSTEM_KEYS
            if unknown:
                raise ValueError(f"{settings.sshr_systems}: system {name!r} has unknown keys {sorted(unknown)}; "
                                 f"allowed {sorted(SYSTEM_KEYS)}")
            out.append(Job(sshr_dir(settings.exp_dir, name, unit), FAMILY, UNIT_CHECKPOINTS[unit], unit,
                           config=lambda name=name, system=system, unit=unit: render_system(settings, name, system, unit)))
    return out
