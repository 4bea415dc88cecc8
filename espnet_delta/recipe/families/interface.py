"""Layer-interface systems (stage 4, ``--interface_systems``; arXiv 2406.12209):
``if_<system>_<unit>``, a frozen upstream, one interface over all its hidden states, the base
config's downstream (encoder) and a CTC head. A system entry is::

    hconv: {interface: hconv}                       # frontend ssl_interface on the reference
    concat: {interface: concat, interface_conf: {output_dim: 64}}
    pca: {interface: pca, interface_conf: {output_dim: 64}}   # fitted on the first training frames
    weighted_sum_big: {interface: weighted_sum, encoder_conf: {hidden_size: 67}}
    wavlm+dhubert_hconv: {interface: hconv, deltas: [hubert], fusion: concat}

``upstream`` names the entry of ``--upstream_conf`` to probe (default the reference,
pre-trained weights) or gives it inline (``{upstream: wavlm_large}``); ``encoder_conf`` is
merged over the base config's (the paper's ablation enlarges the downstream of a weighted
sum to the parameter count of hconv); ``units`` restricts the system to some of
``char``/``phn``. With ``deltas`` the system is delta fusion on the fly (frontend
``delta_fusion``): E_ft of the fine-tuned reference and the delta of each listed model at
every hidden state, one interface per stream, then ``fusion`` (default concat, ``mode``
delta, optional ``fusion_conf``); such a job needs stage 4's fine-tuned models, so it
trains after them.

Units: ``char`` trains on ``<set>/text`` and keeps the base's model selection; ``phn`` on
``<set>/text.phn`` with ESPnet's ``token_type: word`` (one phone per token), selecting
``valid.loss.best.pth`` (:data:`espnet_delta.recipe.names.UNITS`).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from espnet_delta.fileio import load_yaml
from espnet_delta.recipe.families import load_systems, system_units, unit_text, upstream_entry
from espnet_delta.recipe.families.finetune import finetuned_checkpoint
from espnet_delta.recipe.names import UNIT_CHECKPOINTS, Job, interface_dir
from espnet_delta.recipe.train_config import data_keys, warmup_from_lines

FAMILY = "interface"
SYSTEM_KEYS = {"interface", "interface_conf", "upstream", "encoder_conf", "units", "deltas", "fusion", "mode",
               "fusion_conf"}
FUSION_KEYS = {"deltas", "fusion", "mode", "fusion_conf"}


def check_system(settings, name: str, system: Dict[str, Any]) -> None:
    from espnet_delta.ssl.interfaces import interface_names  # torch: only when interface systems are planned

    where = settings.interface_systems
    unknown = set(system) - SYSTEM_KEYS
    if unknown:
        raise ValueError(f"{where}: system {name!r} has unknown keys {sorted(unknown)}; allowed {sorted(SYSTEM_KEYS)}")
    if "interface" not in system:
        raise ValueError(f"{where}: system {name!r} needs 'interface' ({' | '.join(interface_names())})")
    if system["interface"] not in interface_names():
        raise ValueError(f"{where}: system {name!r}: interface={system['interface']!r}; "
                         f"expected one of {interface_names()}")
    if "deltas" not in system:
        unused = sorted(FUSION_KEYS & set(system))
        if unused:
            raise ValueError(f"{where}: system {name!r} sets {unused} without deltas")
        return
    if "upstream" in system:
        raise ValueError(f"{where}: system {name!r}: a fusion system uses the reference, not 'upstream'")
    deltas = system["deltas"]
    if not isinstance(deltas, list) or not deltas:
        raise ValueError(f"{where}: system {name!r}: deltas must be a non-empty list of upstream entries")


def needed_models(settings, system: Dict[str, Any]) -> List[str]:
    """The fine-tuned models a system reads (none for a frozen single upstream)."""
    return [settings.upstreams[0], *system["deltas"]] if "deltas" in system else []


def frontend_of(settings, name: str, system: Dict[str, Any], base: Dict[str, Any], table: Dict[str, Any]) -> tuple:
    """(frontend, frontend_conf) of one system."""
    iface = {"interface": system["interface"], "interface_conf": dict(system.get("interface_conf") or {})}
    if "deltas" not in system:
        upstream = system.get("upstream", settings.upstreams[0])
        if isinstance(upstream, dict):  # inline {upstream: <S3PRL name>, path_or_url: ...}
            upstream = dict(upstream)
        else:
            upstream = upstream_entry(table, upstream, settings.upstream_conf)
        conf = dict(base.get("frontend_conf") or {})
        conf.update(upstream=upstream, **iface)
        return "ssl_interface", conf

    def finetuned(model: str) -> Dict[str, Any]:
        path = finetuned_checkpoint(settings, model)
        if not path.is_file():
            raise FileNotFoundError(f"{settings.interface_systems}: system {name!r} needs the fine-tuned {model}: "
                                    f"{path} not found (stage 4's CTC fine-tuning writes it)")
        return {**upstream_entry(table, model, settings.upstream_conf), "finetuned": str(path)}

    conf = {
        "reference": finetuned(settings.upstreams[0]),
        "deltas": [finetuned(d) for d in system["deltas"]],
        "fusion": system.get("fusion", "concat"),
        "mode": system.get("mode", "delta"),
        **iface,
    }
    if system.get("fusion_conf"):
        conf["fusion_conf"] = dict(system["fusion_conf"])
    return "delta_fusion", conf


def render_system(settings, name: str, system: Dict[str, Any], unit: str) -> Dict[str, Any]:
    token_type, text_name, token_list, criterion = unit_text(settings, unit)
    base = load_yaml(settings.interface_config)
    config = copy.deepcopy(base)
    config["frontend"], config["frontend_conf"] = frontend_of(settings, name, system, base,
                                                              load_yaml(settings.upstream_conf))
    if system.get("encoder_conf"):
        config["encoder_conf"] = {**(config.get("encoder_conf") or {}), **system["encoder_conf"]}
    if criterion is not None:
        config["best_model_criterion"] = criterion
    warmup_from_lines(config, settings.shape_dir / settings.train_set / "speech_shape", settings.interface_config)
    config.update(data_keys(settings.data_dir, settings.shape_dir, settings.train_set, settings.valid_set, token_type,
                            token_list, text_name))
    return config


def jobs(settings) -> List[Job]:
    if not settings.interface_systems:
        return []
    systems = load_systems(settings.interface_systems)
    out = []
    for unit in settings.interface_units:
        unit_jobs = []
        for name, system in systems.items():
            if unit not in system_units(settings.interface_systems, name, system):
                continue
            check_system(settings, name, system)
            needs = tuple(finetuned_checkpoint(settings, m) for m in needed_models(settings, system))
            unit_jobs.append(Job(interface_dir(settings.exp_dir, name, unit), FAMILY, UNIT_CHECKPOINTS[unit], unit,
                                 needs=needs, config=lambda name=name, system=system, unit=unit:
                                 render_system(settings, name, system, unit)))
        if not unit_jobs:
            raise ValueError(f"no {unit} layer-interface systems in {settings.interface_systems}")
        out += unit_jobs
    return out
