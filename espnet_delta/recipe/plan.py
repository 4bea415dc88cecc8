"""The job planner: the jobs a stage runs, from the stage engine's options.

    python -m espnet_delta.recipe.plan interface --interface_systems conf/interface_systems.yaml ...
    python -m espnet_delta.recipe.plan train --wave 1 <options>    # stage 4: every enabled family
    python -m espnet_delta.recipe.plan decode <options>            # stage 5: one line per decode group
    python -m espnet_delta.recipe.plan decode --families fusion <options>   # stage 9
    python -m espnet_delta.recipe.plan names --exp_dir exp        # shell assignments (checkpoints, fragments)
    python -m espnet_delta.recipe.plan fragments --exp_dir exp    # present result fragments, RESULTS.md order

A family (:mod:`espnet_delta.recipe.families`) prints its job dirs, one per line, after
rendering each one's ``train.yaml`` (``--write true``, the default: a trained job's config is
never rewritten) or without writing anything (``--write false``: the job dirs follow from the
options and systems files alone; decoding stages and the engine's print-only mode).

``train`` prints the training jobs of the families the options enable (``--families``
narrows them) in waves: wave 1 needs nothing trained, wave 2 reads wave 1's fine-tuned
models (delta-fusion interface systems), so the engine trains wave 1 first and renders wave
2 after it. ``decode`` prints one line per group of jobs decoded by one command:
``<decoder> <checkpoint> <unit> <input_type> <job dir>...`` (decoder greedy | beam).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, setup_logging
from espnet_delta.fileio import load_yaml
from espnet_delta.ssl.hub import HubModelError
from espnet_delta.recipe import inputs, models, names
from espnet_delta.recipe.families.finetune import merge_child_dir
from espnet_delta.recipe.names import Job
from espnet_delta.recipe.train_config import FULL_CONFIG, dry_run_cap, with_seed, write_job_config

#: the families, in the order stage 4 lists their jobs
STAGE4_FAMILIES = ("finetune", "probe", "whisper", "sshr", "interface")
FAMILIES = (*STAGE4_FAMILIES, "fusion", "transfer")
QUERIES = ("train", "decode", "names", "fragments", "scored")


def family_jobs(family: str, settings) -> List[Job]:
    module = importlib.import_module(f"espnet_delta.recipe.families.{family}")
    return module.jobs(settings)


def enabled_jobs(settings, families: Sequence[str]) -> List[Job]:
    out: List[Job] = []
    for family in families:
        out += family_jobs(family, settings)
    return out


def waves(jobs: Sequence[Job]) -> List[List[Job]]:
    """[jobs needing nothing of this list, jobs needing a checkpoint of the first]."""
    produced = {job.dir / job.checkpoint for job in jobs}
    later = [job for job in jobs if produced & set(job.needs)]
    return [[job for job in jobs if job not in later], later]


def write_configs(jobs: Sequence[Job], dry_run_steps: int = 0, seed: int = 0, dry_run_max_batch: int = 0,
                  dry_run_max_bins: int = 0) -> None:
    """Each job's ``train.yaml``; with ``dry_run_steps`` > 0 capped to that many optimizer steps
    (:func:`dry_run_cap`), the un-capped rendering beside it as ``train.full.yaml`` (the dry-run
    report's step count of the full run). ``seed`` != 0: ESPnet's ``seed:`` key (:func:`with_seed`)."""
    for job in jobs:
        if job.config is None:
            continue
        config = with_seed(job.config(), seed)
        if dry_run_steps > 0:
            write_job_config(job.dir, config, job.checkpoint, name=FULL_CONFIG)
            config = dry_run_cap(config, dry_run_steps, dry_run_max_batch, dry_run_max_bins)
        write_job_config(job.dir, config, job.checkpoint)


def decode_groups(jobs: Sequence[Job]) -> Dict[tuple, List[Job]]:
    """Decoded jobs grouped by (decoder, checkpoint, unit, input type), in first-seen order."""
    groups: Dict[tuple, List[Job]] = {}
    for job in jobs:
        if job.decoded:
            groups.setdefault(job.decode_key, []).append(job)
    return groups


def reference_hub_file(entry: dict) -> str:
    """The file a hub-named upstream entry (``{upstream: wavlm_large}``) loads: its model-map file,
    else S3PRL's cache file (stage 8's base of the task vectors; absent until stage 0 fetched it)."""
    name = entry.get("upstream") or ""
    if not name or name.endswith(models.LOCAL_SUFFIXES):
        return ""
    try:
        return str(models.locate(models.Model("s3prl", name, "the reference"))[0])
    except HubModelError as e:
        logging.warning("reference %s: %s", name, e)
        return ""


def shell_names(settings) -> List[str]:
    """``name=value`` lines for the shell: checkpoint names, paths and fragments (``eval``-safe)."""
    exp = settings.exp_dir
    reference_ckpt = ""
    if settings.upstream_conf and Path(settings.upstream_conf).is_file() and settings.upstreams:
        entry = load_yaml(settings.upstream_conf).get(settings.upstreams[0]) or {}
        reference_ckpt = entry.get("path_or_url") or reference_hub_file(entry)
    reference = settings.upstreams[0] if settings.upstreams else ""
    values = {
        "ref_ft_dir": names.ft_dir(exp, reference),
        "ref_adult_dir": names.ft_dir(exp, reference, adult=True),
        "merge_child_dir": merge_child_dir(settings) if reference else "",  # stage 8's M1
        "whisper_dir": names.ft_dir(exp, names.WHISPER_NAME),
        "whisper_adult_dir": names.ft_dir(exp, names.WHISPER_NAME, adult=True),
        "ft_ckpt": names.CKPT_WER,
        "fusion_ckpt": names.CKPT_WER,
        "whisper_ckpt": names.CKPT_ACC,
        "ft_ckpt_pattern": names.ft_checkpoint_pattern(exp),
        "adult_ckpt_pattern": names.ft_checkpoint_pattern(exp, adult=True),
        "reference_ckpt": reference_ckpt,
        "analysis_dir": str(exp / names.ANALYSIS_DIR),
        **{f"{key}_md": str(names.fragment(exp, key)) for key in names.FRAGMENTS},
    }
    return [f"{key}={shlex.quote(str(value))}" for key, value in values.items()]


def words(value: str) -> List[str]:
    return value.split()


def optional_path(value: str) -> Optional[Path]:
    return Path(value) if value else None


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("what", choices=(*FAMILIES, *QUERIES), help="a family's jobs, or a query (module docstring)")
    add_bool_argument(p, "--write", default=True,
                      help="render the train.yaml of jobs not trained yet; false: only list the job dirs")
    p.add_argument("--families", type=words, default=None,
                   help="train/decode: these families (default: every stage-4 family the options enable)")
    p.add_argument("--wave", type=int, choices=(1, 2), default=None, help="train: only this wave (default: both)")
    p.add_argument("--seed", type=int, default=0,
                   help="ESPnet's seed: in every rendered config (0: the key is left as the config has it; --seeds)")
    add_bool_argument(p, "--check_inputs", default=False,
                      help="with --write: stop (one error line) when a training to render reads a data file that "
                           "does not exist, before any is written (the engine's stages 4 and 7; recipe/inputs.py)")
    p.add_argument("--dry_run_steps", type=int, default=0,
                   help="> 0: cap every rendered training at this many optimizer steps (max_epoch 1; docs/dry_run.md)")
    p.add_argument("--dry_run_max_batch", type=int, default=0,
                   help="with --dry_run_steps, > 0: at most this many utterances per batch where a config counts "
                        "utterances (batch_size); 0: the configs' batches")
    p.add_argument("--dry_run_max_bins", type=int, default=0,
                   help="with --dry_run_steps, > 0: at most this many input samples per batch where a config counts "
                        "bins (numel/length batch_bins); 0: the configs' bins")
    g = p.add_argument_group("the stage engine's options (local/asr.sh)")
    g.add_argument("--exp_dir", type=Path, default=Path("exp"))
    g.add_argument("--data_dir", type=Path, default=Path("data"))
    g.add_argument("--shape_dir", type=Path, default=Path("dump/shapes"))
    g.add_argument("--feats_dir", type=Path, default=Path("dump/feats"))
    g.add_argument("--token_type", default="char")
    g.add_argument("--token_list", type=Path, default=Path("data/token_list/char/tokens.txt"))
    g.add_argument("--phone_token_list", type=Path, default=Path("data/token_list/phn/tokens.txt"))
    g.add_argument("--train_set", default="train")
    g.add_argument("--finetune_train_set", default="",
                   help="the child CTC fine-tunings' (ft_<upstream>) training set: the engine's <train_set>_sp with "
                        "--speed_perturb_factors; '' = --train_set")
    g.add_argument("--valid_set", default="dev")
    g.add_argument("--fusion_train_set", default="",
                   help="the fusion heads' training set, its cached features in --feats_dir (the engine's "
                        "<train_set>_sp with --fusion_speed_perturb true); '' = --train_set")
    g.add_argument("--adult_train_set", default="")
    g.add_argument("--adult_valid_set", default="")
    g.add_argument("--upstreams", type=words, default=["wavlm", "hubert", "wav2vec2"], help="the first is the reference")
    g.add_argument("--adult_upstreams", type=words, default=[])
    g.add_argument("--upstream_conf", type=Path, default=Path("conf/upstreams.yaml"))
    g.add_argument("--tiny_upstream_dir", default="")
    g.add_argument("--finetune_config", type=optional_path, default=None)
    g.add_argument("--merge_finetune_config", type=optional_path, default=None,
                   help="fine-tune stage 8's two models with this config: ft_<ref>_merge and ft_<ref>_adult")
    g.add_argument("--probe_config", type=optional_path, default=None)
    g.add_argument("--interface_config", type=optional_path, default=None)
    g.add_argument("--interface_systems", type=optional_path, default=None)
    g.add_argument("--interface_units", type=words, default=["char", "phn"])
    g.add_argument("--sshr_config", type=optional_path, default=None)
    g.add_argument("--sshr_systems", type=optional_path, default=None)
    g.add_argument("--sshr_units", type=words, default=["char", "phn"])
    g.add_argument("--whisper_config", type=optional_path, default=None)
    g.add_argument("--whisper_model", default="", help="hub name or checkpoint of encoder and decoder ('': the config's)")
    g.add_argument("--fusion_config", type=optional_path, default=None)
    g.add_argument("--fusion_systems", type=optional_path, default=None)
    g = p.add_argument_group("the transfer family (local/transfer.sh)")
    g.add_argument("--transfer_scale", default=None, help="lambda of the transferred model transfer_s<lambda>")
    g.add_argument("--further_epochs", default="2", help="epochs of the further fine-tuning")
    g.add_argument("--further_lr", default="0.001", help="its constant learning rate")
    add_log_level_argument(p)
    return p


def checked(jobs: Sequence[Job], args) -> Sequence[Job]:
    """``jobs``, after :func:`inputs.check_inputs` where ``--check_inputs`` asks for it."""
    if args.check_inputs:
        inputs.check_inputs(jobs, args)
    return jobs


def run(args) -> List[str]:
    """The lines to print."""
    if args.what == "names":
        return shell_names(args)
    if args.what == "fragments":
        return [str(f) for f in names.present_fragments(args.exp_dir)]
    if args.what == "scored":
        return [str(d) for d in names.scored_dirs(args.exp_dir)]
    if args.what in FAMILIES:
        jobs = family_jobs(args.what, args)
        if args.write:
            write_configs(checked(jobs, args), args.dry_run_steps, args.seed, args.dry_run_max_batch,
                          args.dry_run_max_bins)
        return [str(job.dir) for job in jobs]
    jobs = enabled_jobs(args, args.families if args.families is not None else STAGE4_FAMILIES)
    if args.what == "train":
        todo = [job for i, wave in enumerate(waves(jobs), 1) if args.wave in (None, i) for job in wave]
        if args.write:
            write_configs(checked(todo, args), args.dry_run_steps, args.seed, args.dry_run_max_batch,
                          args.dry_run_max_bins)
        return [str(job.dir) for job in todo]
    return [" ".join([*key, *(str(job.dir) for job in group)]) for key, group in decode_groups(jobs).items()]


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Prints its lines on stdout (the stage engine reads them); logs go to stderr."""
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    try:
        lines = run(args)
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        raise SystemExit(1)
    for line in lines:
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
