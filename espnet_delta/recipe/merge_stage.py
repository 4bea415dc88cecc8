"""Stage 8: merge the child and adult fine-tuned models; every method tuned on dev, then decoded.

    python -m espnet_delta.recipe.merge_stage --child exp/ft_wavlm --adult exp/ft_wavlm_adult \\
        --base downloads/upstreams/wavlm.pt --data_dir data --valid_set dev --test_sets test \\
        --schedules depth_power linear_exponent --lambdas 0.1 0.2 0.3 --alphas 0.7 0.8 0.9 --exp_dir exp

Grids (see :mod:`espnet_delta.recipe.merge_grid`): SA merge over every schedule reading
given (each formula over lambdas x alphas, each schedule YAML file as one point), lerp
over ``--lerp_coefs``, task arithmetic over ``--ta_scales``, TIES over ``--ties_topks`` x
``--ties_scales``. Every grid point is merged into ``<exp>/merge_grid/<name>`` and decoded
on the validation set ``--valid_set`` (its model is deleted afterwards unless ``--keep_grid_models``); each
method's dev-best point becomes ``<exp>/merge_<name>`` (the child's ``config.yaml``, the
merged model, for SA ``merge_schedule.tsv``) and is decoded and scored on every set, so
``exp/*/decode/*/score_wer`` holds one row per method for RESULTS.md. The grid is recorded
in ``<exp>/merge_grid.tsv``, the choices and their WERs in ``<exp>/merge_results.md``.
All in one process; finished merges and decodings are reused. ``--name whisper`` writes
``merge_whisper_*`` instead of ``merge_*`` (the Whisper merges beside the SSL ones), and
``--decode_config`` decodes with ESPnet's beam search (attention decoders) instead of
greedy CTC. The two merged models are decoded on every set too (hypotheses already there,
e.g. the child's from stage 5, are reused), so the section compares the merges with the child
and with the adult model on child speech, and it reports each one's task vector norm
``||tau||_2 / ||theta_base||_2`` (:mod:`espnet_delta.merge.task_norms`): the premise of
task-vector merging is that these are small.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, reports_bad_input, \
    setup_logging
from espnet_delta.fileio import atomic_path, write_text_atomic
from espnet_delta.recipe.names import CKPT_WER
from espnet_delta.merge import SCHEDULE_TSV
from espnet_delta.merge.task_norms import TaskNorm, task_norm_files

MODEL_NAME = CKPT_WER  # the fine-tuned models' checkpoint (espnet_delta.recipe.names)
ROLES = ("child model (M1)", "adult model (M2)")


def merge_into(job: Path, child: Path, adult: Path, base: Path, config, model_name: str = MODEL_NAME) -> Path:
    """``job`` with the child's config.yaml and the merged model (kept if already there)."""
    from espnet_delta.merge import merge_files

    model = job / model_name
    if model.is_file():
        logging.info("%s exists, not merging again", model)
        return job
    job.mkdir(parents=True, exist_ok=True)
    for stale in job.glob(f".{model_name}.*.tmp"):  # a merge killed mid-write: as large as the model
        stale.unlink()
    shutil.copyfile(child / "config.yaml", job / "config.yaml")
    merge_files([child / model_name, adult / model_name], model, config, base_path=base, progress=False,
                schedule_out=job / SCHEDULE_TSV)  # fmt: skip
    return job


def decode_and_score(
    job: Path,
    sets: List[Tuple[str, Path]],
    data_dir: Path,
    batch_size: int,
    device: str,
    model_name: str = MODEL_NAME,
    decode_config: Optional[Path] = None,
) -> Dict[str, float]:
    """WER per set; greedy CTC, or ESPnet's beam search with the options of ``decode_config``."""
    from espnet_delta.asr.decoding import DecodeOptions, decode_job

    options = DecodeOptions(beam=decode_config is not None, decode_config=decode_config, batch_size=batch_size,
                            device=device, ref_dir=data_dir)
    return {name: summary.counts.wer for name, summary in decode_job(job, model_name, sets, options).items()}


def get_parser() -> argparse.ArgumentParser:
    from espnet_delta.recipe import merge_grid as g

    p = new_parser(__doc__)
    p.add_argument("--child", type=Path, required=True, help="job dir of the child-speech model (M1)")
    p.add_argument("--adult", type=Path, required=True, help="job dir of the adult-speech model (M2)")
    p.add_argument("--base", type=Path, required=True, help="pre-trained checkpoint both started from")
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--valid_set", default="dev", help="the set every grid point is decoded on and chosen by")
    p.add_argument("--test_sets", nargs="+", default=["test"])
    p.add_argument("--methods", nargs="+", default=list(g.METHOD_ORDER), choices=g.METHOD_ORDER,
                   help="merge methods to tune and decode")
    p.add_argument("--schedules", nargs="+", default=list(g.DEFAULT_SCHEDULES),
                   help="SA schedule readings: formula names (swept over --lambdas x --alphas) and/or "
                   "schedule YAML files (layer groups or explicit c_i; one grid point each)")
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    p.add_argument("--alphas", nargs="+", type=float, default=[0.7, 0.8, 0.9])
    p.add_argument("--lerp_coefs", nargs="+", type=float, default=list(g.DEFAULT_LERP_COEFS),
                   help="lerp grid: weight c of the child model")
    p.add_argument("--ta_scales", nargs="+", type=float, default=list(g.DEFAULT_TA_SCALES),
                   help="task-arithmetic grid: scale of both task vectors")
    p.add_argument("--ties_topks", nargs="+", type=float, default=list(g.DEFAULT_TIES_TOPKS),
                   help="TIES grid: percent of each task vector kept (crossed with --ties_scales)")
    p.add_argument("--ties_scales", nargs="+", type=float, default=list(g.DEFAULT_TIES_SCALES),
                   help="TIES grid: scale of the merged task vector")
    p.add_argument("--reinit", nargs="*", default=[r"(^|\.)token_embedding\."],
                   help="regexes of tensors fine-tuning re-created with a new shape (no task vector where "
                   "the base's shape differs), e.g. a Whisper token embedding for a new token list")
    p.add_argument("--model_name", default=MODEL_NAME, help="checkpoint file name inside the job dirs")
    p.add_argument("--name", default="", help="'' writes merge_*; e.g. whisper writes merge_whisper_* (grid, jobs, tables)")
    p.add_argument("--decode_config", type=Path, default=None,
                   help="beam-search options (ESPnet Speech2Text YAML) for attention-decoder models; default greedy CTC")
    add_bool_argument(p, "--keep_grid_models", help="keep every grid point's merged model (default: only the chosen)")
    p.add_argument("--exp_dir", type=Path, required=True)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    from espnet_delta.recipe import merge_grid as g

    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    for job in (args.child, args.adult):
        for name in ("config.yaml", args.model_name):
            if not (job / name).is_file():
                p.error(f"{job / name} not found (run stage 4)")
    common = {"reinit": args.reinit}
    points = []
    if "sa" in args.methods:
        points += g.sa_points(args.schedules, args.lambdas, args.alphas, **common)
    baselines = g.baseline_points(args.lerp_coefs, args.ta_scales, args.ties_topks, args.ties_scales, **common)
    points += [pt for pt in baselines if pt.method in args.methods]
    g.check_unique(points)
    sa_size = len(args.lambdas) * len(args.alphas)
    for method in args.methods:
        n = sum(1 for pt in points if pt.method == method)
        if method != "sa" and n != sa_size:
            logging.warning("the %s grid has %d points, SA's lambda x alpha grid %d: not like for like", method, n, sa_size)

    args.prefix = f"merge_{args.name}" if args.name else "merge"
    dev = [(args.valid_set, args.data_dir / args.valid_set / "wav.scp")]
    every = [(s, args.data_dir / s / "wav.scp") for s in dict.fromkeys([args.valid_set, *args.test_sets])]
    inputs = (args.child, args.adult, args.base)
    norms = _task_norms(args)
    models = {job.name: (role, _decode(args, job, every)) for job, role in zip((args.child, args.adult), ROLES)}
    scored = []
    for pt in points:
        wer = _grid_point(args, pt, inputs, dev)
        scored.append((pt, wer))
        logging.info("%s %s (%s): %s WER %.2f", pt.method, pt.reading, pt.params, args.valid_set, wer)
    write_text_atomic(args.exp_dir / f"{args.prefix}_grid.tsv", g.grid_tsv(scored, args.valid_set))

    finals = {}
    for method, (pt, wer) in g.best_per(scored, "method").items():
        logging.info("best %s on %s: %s (%s), WER %.2f", method, args.valid_set, pt.name, pt.params, wer)
        job = _final(args, pt, inputs)
        wers = _decode(args, job, every)
        finals[job.name] = wers
        logging.info("%s: %s", job.name, ", ".join(f"{k} WER {v:.2f}" for k, v in wers.items()))
    title = f"Model merging ({args.name})" if args.name else "Model merging"
    results = g.results_md(scored, finals, args.valid_set, args.test_sets, prefix=args.prefix, title=title,
                           inputs=models, norms=norms, base=str(args.base))
    write_text_atomic(args.exp_dir / f"{args.prefix}_results.md", results)
    logging.info("wrote %s and %s", args.exp_dir / f"{args.prefix}_grid.tsv", args.exp_dir / f"{args.prefix}_results.md")


def _task_norms(args) -> List[Tuple[str, str, TaskNorm]]:
    """(job, role, norm) of the child and the adult model against the base, logged."""
    out = []
    for job, role in zip((args.child, args.adult), ROLES):
        norm = task_norm_files(job / args.model_name, args.base, args.reinit)
        logging.info("%s (%s): ||tau|| / ||theta_base|| = %.4g over %d attention Q/K/V tensors, %.4g over all %d "
                     "tensors with a task vector", job.name, role, norm.relative("sa"), norm.tensors["sa"],
                     norm.relative("all"), norm.tensors["all"])  # fmt: skip
        out.append((job.name, role, norm))
    return out


def _decode(args, job: Path, sets) -> Dict[str, float]:
    return decode_and_score(job, sets, args.data_dir, args.batch_size, args.device, args.model_name, args.decode_config)


def _grid_point(args, pt, inputs, dev) -> float:
    """Dev WER of one grid point: merged and decoded unless its dev hypotheses exist."""
    job = args.exp_dir / f"{args.prefix}_grid" / pt.name
    decoded = (job / "decode" / args.valid_set / "text").is_file()
    if not decoded:
        merge_into(job, *inputs, pt.config, args.model_name)
    wer = _decode(args, job, dev)[args.valid_set]
    if not args.keep_grid_models and (job / args.model_name).is_file():
        (job / args.model_name).unlink()  # a paper-scale grid would hold dozens of full models
    return wer


def _final(args, pt, inputs) -> Path:
    """``<exp>/merge_<name>``: the chosen point's model (copied from the grid when kept,
    else merged again: merging is deterministic) and its dev hypotheses."""
    grid, job = args.exp_dir / f"{args.prefix}_grid" / pt.name, args.exp_dir / f"{args.prefix}_{pt.name}"
    if not (job / args.model_name).is_file() and (grid / args.model_name).is_file():
        job.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", SCHEDULE_TSV, args.model_name):  # the model last: it marks the job done
            if (grid / name).is_file():
                with atomic_path(job / name) as tmp:
                    shutil.copyfile(grid / name, tmp)
    merge_into(job, *inputs, pt.config, args.model_name)
    hyp = Path("decode") / args.valid_set / "text"
    if (grid / hyp).is_file() and not (job / hyp).is_file():
        with atomic_path(job / hyp) as tmp:  # a kill mid-copy must not leave a short hypothesis file taken as decoded
            shutil.copyfile(grid / hyp, tmp)
    return job


if __name__ == "__main__":
    main()
