"""Render the ESPnet configs of the layer-interface systems (stage 4, ``--interface_systems``).

    python -m espnet_delta.recipe.interface_jobs --systems conf/interface_systems.yaml \\
        --base_config conf/interface.yaml --upstream_conf conf/upstreams.yaml --reference wavlm \\
        --finetuned 'exp/ft_{name}/valid.wer_ctc.best.pth' --data_dir data --shape_dir dump/shapes \\
        --train_set train --valid_set dev --unit char --token_list data/token_list/char/tokens.txt --exp_dir exp

writes ``<exp_dir>/if_<system>_<unit>/train.yaml`` per system and prints the job
directories (one per line) for ``espnet_delta.recipe.train_jobs``. The setting of
arXiv 2406.12209: a frozen upstream, a layer interface over all its hidden states,
the base config's downstream (encoder) and a CTC head. A system entry is::

    hconv: {interface: hconv}                       # frontend ssl_interface on --reference
    concat: {interface: concat, interface_conf: {output_dim: 64}}
    weighted_sum_big: {interface: weighted_sum, encoder_conf: {hidden_size: 67}}
    wavlm+dhubert_hconv: {interface: hconv, deltas: [hubert], fusion: concat}

``upstream`` names the entry of ``--upstream_conf`` to probe (default ``--reference``,
pre-trained weights) or gives it inline (``{upstream: wavlm_large}``, any S3PRL name); ``encoder_conf`` is merged over the base config's (the paper's
ablation enlarges the downstream of a weighted sum to the parameter count of hconv);
``units`` restricts the system to some of ``char``/``phn``. With ``deltas`` the system
is delta fusion on the fly (frontend ``delta_fusion``): E_ft of the fine-tuned
reference and the delta of each listed model (``--finetuned`` with ``{name}``), at
every hidden state, through one interface per stream, then ``fusion`` (default
concat, ``mode`` delta, optional ``fusion_conf``).

Units: ``char`` trains on ``<set>/text`` (character tokens) and keeps the base
config's model selection (``valid.wer_ctc.best.pth``); ``phn`` trains on
``<set>/text.phn`` with ESPnet's ``token_type: word`` (one phone per token) and
selects ``valid.loss.best.pth``: ESPnet's ``cer_ctc`` and our ``wer_ctc`` join the
tokens into one string, which is no phone error rate. ``warmup_fraction`` in the base
config becomes a ``piecewiselinearwarmuplr`` schedule (linear warm-up over that
fraction of all steps, then linear decay to 0 at the last one), with ESPnet's
``sorted`` batch count max(N // batch_size, 1) per epoch.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import load_yaml, write_yaml_atomic

SYSTEM_KEYS = {"interface", "interface_conf", "upstream", "encoder_conf", "units", "deltas", "fusion", "mode",
               "fusion_conf"}
FUSION_KEYS = {"deltas", "fusion", "mode", "fusion_conf"}
#: unit -> (ESPnet token_type, text file in each data dir, best_model_criterion override)
UNITS: Dict[str, tuple] = {
    "char": ("char", "text", None),
    "phn": ("word", "text.phn", [["valid", "loss", "min"]]),
}
#: the checkpoint stage 5 decodes, per unit (ESPnet names it <phase>.<key>.best.pth)
MODEL_NAMES = {"char": "valid.wer_ctc.best.pth", "phn": "valid.loss.best.pth"}
JOB_PREFIX = "if_"


def count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def warmup_schedule(config: Dict[str, Any], n_train: int, where: Path) -> None:
    """Replace ``warmup_fraction`` by piecewise-linear warm-up/decay steps (module docstring)."""
    fraction = config.pop("warmup_fraction", None)
    if fraction is None:
        return
    if config.get("batch_type") != "sorted" or "batch_size" not in config:
        raise ValueError(f"{where}: warmup_fraction needs batch_type: sorted and batch_size (a known step count)")
    steps_per_epoch = max(n_train // config["batch_size"], 1)
    total = max(steps_per_epoch * config["max_epoch"] // config.get("accum_grad", 1), 1)
    warmup = min(max(1, round(total * fraction)), total)
    lr = config["optim_conf"]["lr"]
    config["scheduler"] = "piecewiselinearwarmuplr"
    config["scheduler_conf"] = {"warmup_steps_list": [0, warmup, total], "warmup_lr_list": [0.0, lr, 0.0]}


def upstream_entry(table: Dict[str, Any], name: str, where: Path) -> Dict[str, Any]:
    if name not in table:
        raise ValueError(f"{where}: no upstream entry {name!r} (has {sorted(table)})")
    return dict(table[name])


def frontend_of(name: str, system: Dict[str, Any], base: Dict[str, Any], table: Dict[str, Any], args) -> tuple:
    """(frontend, frontend_conf) of one system."""
    iface = {"interface": system["interface"], "interface_conf": dict(system.get("interface_conf") or {})}
    if "deltas" not in system:
        unused = sorted(FUSION_KEYS & set(system))
        if unused:
            raise ValueError(f"{args.systems}: system {name!r} sets {unused} without deltas")
        upstream = system.get("upstream", args.reference)
        if isinstance(upstream, dict):  # inline {upstream: <S3PRL name>, path_or_url: ...}
            upstream = dict(upstream)
        else:
            upstream = upstream_entry(table, upstream, args.upstream_conf)
        conf = dict(base.get("frontend_conf") or {})
        conf.update(upstream=upstream, **iface)
        return "ssl_interface", conf

    def finetuned(model: str) -> Dict[str, Any]:
        path = Path(args.finetuned.format(name=model))
        if not path.is_file():
            raise FileNotFoundError(f"{args.systems}: system {name!r} needs the fine-tuned {model}: {path} not found "
                                    "(stage 4's CTC fine-tuning writes it)")
        return {**upstream_entry(table, model, args.upstream_conf), "finetuned": str(path)}

    if "upstream" in system:
        raise ValueError(f"{args.systems}: system {name!r}: a fusion system uses --reference, not 'upstream'")
    deltas = system["deltas"]
    if not isinstance(deltas, list) or not deltas:
        raise ValueError(f"{args.systems}: system {name!r}: deltas must be a non-empty list of upstream entries")
    conf = {
        "reference": finetuned(args.reference),
        "deltas": [finetuned(d) for d in deltas],
        "fusion": system.get("fusion", "concat"),
        "mode": system.get("mode", "delta"),
        **iface,
    }
    if system.get("fusion_conf"):
        conf["fusion_conf"] = dict(system["fusion_conf"])
    return "delta_fusion", conf


def render_system(name: str, system: Dict[str, Any], base: Dict[str, Any], table: Dict[str, Any], args) -> Path:
    unknown = set(system) - SYSTEM_KEYS
    if unknown:
        raise ValueError(f"{args.systems}: system {name!r} has unknown keys {sorted(unknown)}; "
                         f"allowed {sorted(SYSTEM_KEYS)}")
    if "interface" not in system:
        raise ValueError(f"{args.systems}: system {name!r} needs 'interface' (last | weighted_sum | hconv | concat)")
    token_type, text_name, criterion = UNITS[args.unit]
    config = copy.deepcopy(base)
    config["frontend"], config["frontend_conf"] = frontend_of(name, system, base, table, args)
    if system.get("encoder_conf"):
        config["encoder_conf"] = {**(config.get("encoder_conf") or {}), **system["encoder_conf"]}
    return write_train_config(config, args, f"{JOB_PREFIX}{name}_{args.unit}", token_type, text_name, criterion)


def write_train_config(config: Dict[str, Any], args, job_name: str, token_type: str, text_name: str,
                       criterion) -> Path:
    """Fill in the data, token and schedule keys every recipe-rendered system shares and
    write ``<exp_dir>/<job_name>/train.yaml``; returns the job directory."""
    if criterion is not None:
        config["best_model_criterion"] = criterion
    train_shape = args.shape_dir / args.train_set / "speech_shape"
    warmup_schedule(config, count_lines(train_shape), args.base_config)

    def data(set_name: str) -> List[List[str]]:
        d = args.data_dir / set_name
        return [[str(d / "wav.scp"), "speech", "sound"], [str(d / text_name), "text", "text"]]

    config.update(
        token_type=token_type,
        token_list=str(args.token_list),
        use_preprocessor=True,
        train_data_path_and_name_and_type=data(args.train_set),
        valid_data_path_and_name_and_type=data(args.valid_set),
        train_shape_file=[str(train_shape)],
        valid_shape_file=[str(args.shape_dir / args.valid_set / "speech_shape")],
    )
    job = args.exp_dir / job_name
    write_yaml_atomic(config, job / "train.yaml")
    return job


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", type=Path, required=True, help="YAML: system name -> {interface, ...}")
    p.add_argument("--base_config", type=Path, required=True, help="ESPnet config shared by every system")
    p.add_argument("--upstream_conf", type=Path, required=True, help="YAML: name -> {upstream, path_or_url}")
    p.add_argument("--reference", required=True, help="upstream entry probed by default; fusion reference")
    p.add_argument("--finetuned", default="exp/ft_{name}/valid.wer_ctc.best.pth",
                   help="fine-tuned checkpoint of a fusion system's models, {name} is replaced")
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
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    if not args.token_list.is_file():
        p.error(f"{args.unit} token list not found: {args.token_list} (stage 2 writes it"
                + (" when the corpus has phones)" if args.unit == "phn" else ")"))
    systems = load_yaml(args.systems)
    base = load_yaml(args.base_config)
    table = load_yaml(args.upstream_conf)
    for name, system in systems.items():
        if not isinstance(system, dict):
            p.error(f"{args.systems}: system {name!r} must be a mapping, got {system!r}")
        units = system.get("units", list(UNITS))
        bad = sorted(set(units) - set(UNITS))
        if bad:
            p.error(f"{args.systems}: system {name!r}: unknown units {bad}; allowed {sorted(UNITS)}")
        if args.unit not in units:
            continue
        job = render_system(name, system, base, table, args)
        logging.debug("%s: wrote %s", name, job / "train.yaml")
        print(job)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
