"""Stage 8: merge the child and adult fine-tuned models, pick SA's (lambda, alpha) on dev, decode.

    python -m espnet_delta.recipe.merge_stage --child exp/ft_wavlm --adult exp/ft_wavlm_adult \\
        --base downloads/upstreams/wavlm.pt --data_dir data --dev_set dev --test_sets test \\
        --lambdas 0.1 0.2 0.3 --alphas 0.7 0.8 0.9 --exp_dir exp

Writes one job directory per merged model (``exp/merge_<method>...``: ESPnet's
``config.yaml`` of the child model and the merged ``valid.wer_ctc.best.pth``), decodes
every SA grid point on the dev set, takes the (lambda, alpha) with the lowest dev WER,
decodes it and the baselines (lerp, task arithmetic, TIES) on every set, and records
the choice in ``<exp_dir>/merge_sa_grid.tsv``. All in one process; finished merges and
decodings are reused.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import write_text_atomic

MODEL_NAME = "valid.wer_ctc.best.pth"


def merge_into(job: Path, child: Path, adult: Path, base: Path, config) -> Path:
    from espnet_delta.merge import merge_files

    model = job / MODEL_NAME
    if model.is_file():
        logging.info("%s exists, not merging again", model)
        return job
    job.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(child / "config.yaml", job / "config.yaml")
    merge_files([child / MODEL_NAME, adult / MODEL_NAME], model, config, base_path=base, progress=False)
    return job


def decode_and_score(job: Path, sets: List[Tuple[str, Path]], data_dir: Path, batch_size: int, device: str) -> Dict[str, float]:
    from espnet_delta.bin.decode import decode_job
    from espnet_delta.scoring import load_score

    args = SimpleNamespace(input_type="sound", batch_size=batch_size, device=device, ref_dir=data_dir, no_sctk=False, unit="char")
    decode_job(job, MODEL_NAME, sets, args)
    return {name: load_score(job / "decode" / name / "score_wer").counts.wer for name, _ in sets}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", type=Path, required=True, help="job dir of the child-speech model (M1)")
    p.add_argument("--adult", type=Path, required=True, help="job dir of the adult-speech model (M2)")
    p.add_argument("--base", type=Path, required=True, help="pre-trained upstream checkpoint both started from")
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--dev_set", default="dev")
    p.add_argument("--test_sets", nargs="+", default=["test"])
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    p.add_argument("--alphas", nargs="+", type=float, default=[0.7, 0.8, 0.9])
    p.add_argument("--schedule", default="depth_power", choices=["depth_power", "linear_exponent"])
    p.add_argument("--ties_topk", type=float, default=20.0)
    p.add_argument("--exp_dir", type=Path, required=True)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    from espnet_delta.merge import MergeConfig

    for job in (args.child, args.adult):
        for name in ("config.yaml", MODEL_NAME):
            if not (job / name).is_file():
                p.error(f"{job / name} not found (run stage 4)")
    dev = [(args.dev_set, args.data_dir / args.dev_set / "wav.scp")]
    every = [(s, args.data_dir / s / "wav.scp") for s in dict.fromkeys([args.dev_set, *args.test_sets])]
    merge_args = (args.child, args.adult, args.base)

    grid = []
    for lam in args.lambdas:
        for alpha in args.alphas:
            job = merge_into(args.exp_dir / f"merge_sa_grid/l{lam:g}_a{alpha:g}", *merge_args,
                             MergeConfig("sa", sa_lambda=lam, sa_alpha=alpha, schedule=args.schedule))
            wer = decode_and_score(job, dev, args.data_dir, args.batch_size, args.device)[args.dev_set]
            grid.append((wer, lam, alpha))
            logging.info("SA lambda=%g alpha=%g: dev WER %.2f", lam, alpha, wer)
    best_wer, best_lam, best_alpha = min(grid)
    lines = ["lambda\talpha\tdev_wer\n"] + [f"{lam:g}\t{alpha:g}\t{wer:.2f}\n" for wer, lam, alpha in sorted(grid, key=lambda g: (g[1], g[2]))]
    write_text_atomic(args.exp_dir / "merge_sa_grid.tsv", "".join(lines) + f"# best: lambda={best_lam:g} alpha={best_alpha:g}\n")
    logging.info("best SA on %s: lambda=%g alpha=%g (WER %.2f)", args.dev_set, best_lam, best_alpha, best_wer)

    finals = {
        f"merge_sa_l{best_lam:g}_a{best_alpha:g}": MergeConfig("sa", sa_lambda=best_lam, sa_alpha=best_alpha, schedule=args.schedule),
        "merge_lerp_c0.5": MergeConfig("lerp", coefs=[0.5]),
        "merge_ta": MergeConfig("ta", coefs=[1.0, 1.0]),
        f"merge_ties_k{args.ties_topk:g}": MergeConfig("ties", ties_topk=args.ties_topk),
    }
    for name, config in finals.items():
        job = merge_into(args.exp_dir / name, *merge_args, config)
        wers = decode_and_score(job, every, args.data_dir, args.batch_size, args.device)
        logging.info("%s: %s", name, ", ".join(f"{k} WER {v:.2f}" for k, v in wers.items()))


if __name__ == "__main__":
    main()
