"""Fusion systems on cached features (stage 7, ``--fusion_systems``): ``fusion_<system>``, the
cached E_ft of the reference and E_delta (or E_ft) of other models through a fusion module
and a new linear CTC head. A system entry is ``{fusion, mode, deltas: [model names],
fusion_conf: {...}}``; the reference is the feature layout's (stage 6) unless set.
The heads train on ``--fusion_train_set`` (default ``--train_set``; the engine's ``<train_set>_sp``
with ``--fusion_speed_perturb true``, so that they see the speeds the reference was fine-tuned on).
``warmup_fraction`` becomes the piecewise-linear schedule of the authors' recipe
(:func:`espnet_delta.recipe.train_config.warmup_schedule`, one batch count for every family).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from espnet_delta.fileio import load_yaml
from espnet_delta.recipe.families import load_systems
from espnet_delta.recipe.names import CKPT_WER, Job, fusion_dir
from espnet_delta.recipe.train_config import data_keys, warmup_from_lines

FAMILY = "fusion"
SYSTEM_KEYS = {"fusion", "mode", "deltas", "fusion_conf", "reference"}


def render_system(settings, name: str, system: Dict[str, Any]) -> Dict[str, Any]:
    from espnet_delta.features.layout import FeatureLayout

    train_set = settings.fusion_train_set or settings.train_set
    train_feats = settings.feats_dir / train_set
    layout_file = train_feats / "layout.json"
    layout = FeatureLayout.load(layout_file)
    config = copy.deepcopy(load_yaml(settings.fusion_config))
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
    warmup_from_lines(config, train_feats / "feats.scp", settings.fusion_config)
    config.update(data_keys(settings.data_dir, settings.shape_dir, train_set, settings.valid_set,
                            settings.token_type, settings.token_list, feats_dir=settings.feats_dir))
    return config


def jobs(settings) -> List[Job]:
    if not settings.fusion_systems:
        return []
    systems = load_systems(settings.fusion_systems)
    if not systems:
        raise ValueError(f"no fusion systems in {settings.fusion_systems}")
    out = []
    for name, system in systems.items():
        unknown = set(system) - SYSTEM_KEYS
        if unknown:
            raise ValueError(f"{settings.fusion_systems}: system {name!r} has unknown keys {sorted(unknown)}; "
                             f"allowed {sorted(SYSTEM_KEYS)}")
        out.append(Job(fusion_dir(settings.exp_dir, name), FAMILY, CKPT_WER, input_type="kaldi_ark",
                       config=lambda name=name, system=system: render_system(settings, name, system)))
    return out
