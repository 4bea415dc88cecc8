"""Augmentation task vectors and their transfer to a second child corpus (arXiv 2501.08468).

    python -m espnet_delta.recipe.transfer_stage grid --target exp/kids/ft_wavlm --aug exp/aug/ft_wavlm \\
        --orig exp/ft_wavlm --scales 0.25 0.5 0.75 1.0 --data_dir data --valid_set kids_dev \\
        --test_sets kids_test --exp_dir exp/kids
    python -m espnet_delta.recipe.transfer_stage results --exp_dir exp --out exp/transfer_results.md ...

The augmentation task vector tau_aug = theta_aug - theta_orig is what fine-tuning with
augmentation (speed perturbation, SpecAugment) changes in a model fine-tuned on the
same child corpus without it. ``grid`` adds lambda * tau_aug to a model fine-tuned on
another child corpus (every floating tensor, the CTC head included: both corpora share
one token list; :mod:`espnet_delta.merge.transfer`), one job dir ``<exp_dir>/transfer_s<lambda>`` per lambda (ESPnet's
``config.yaml`` of the target and the new ``valid.wer_ctc.best.pth``), decodes each on
the dev set, keeps the lambda with the lowest dev WER (ties: the smaller lambda),
decodes it on the test sets and writes ``<exp_dir>/transfer_grid.tsv``. Finished
models and decodings are reused. ``results`` writes the Markdown section of
RESULTS.md (``exp/transfer_results.md``).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_delta.cli import add_log_level_argument, new_parser, reports_bad_input, setup_logging
from espnet_delta.fileio import write_text_atomic
from espnet_delta.recipe.names import CKPT_WER, TRANSFER_PREFIX

MODEL_NAME = CKPT_WER  # the fine-tuned models' checkpoint (espnet_delta.recipe.names)
GRID_NAME = "transfer_grid.tsv"
JOB_PREFIX = TRANSFER_PREFIX

def job_name(scale: float) -> str:
    return f"{JOB_PREFIX}{scale:g}"


def decode_and_score(job: Path, sets: List[Tuple[str, Path]], data_dir: Path, batch_size: int, device: str) -> Dict[str, float]:
    """WER per set, greedy CTC (:func:`espnet_delta.asr.decoding.decode_job`)."""
    from espnet_delta.asr.decoding import DecodeOptions, decode_job

    options = DecodeOptions(batch_size=batch_size, device=device, ref_dir=data_dir)
    return {name: summary.counts.wer for name, summary in decode_job(job, MODEL_NAME, sets, options).items()}


def run_grid(args: argparse.Namespace) -> float:
    """The zero-shot transfer grid (module docstring); returns the chosen scale."""
    for job in (args.target, args.aug, args.orig):
        if not (job / MODEL_NAME).is_file():
            raise FileNotFoundError(f"{job / MODEL_NAME} not found (fine-tune it first)")
    dev = [(args.valid_set, args.data_dir / args.valid_set / "wav.scp")]
    grid = []
    for scale in args.scales:
        job = args.exp_dir / job_name(scale)
        if not (job / MODEL_NAME).is_file():
            job.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.target / "config.yaml", job / "config.yaml")
            from espnet_delta.merge.transfer import transfer_file

            transfer_file(args.target / MODEL_NAME, args.aug / MODEL_NAME, args.orig / MODEL_NAME, scale, job / MODEL_NAME)
        wer = decode_and_score(job, dev, args.data_dir, args.batch_size, args.device)[args.valid_set]
        grid.append((wer, scale))
        logging.info("transfer lambda=%g: %s WER %.2f", scale, args.valid_set, wer)
    best_wer, best = min(grid)
    lines = ["lambda\tdev_wer\n"] + [f"{s:g}\t{w:.2f}\n" for w, s in sorted(grid, key=lambda g: g[1])]
    write_text_atomic(args.exp_dir / GRID_NAME, "".join(lines) + f"# best: lambda={best:g}\n")
    every = [(s, args.data_dir / s / "wav.scp") for s in dict.fromkeys([args.valid_set, *args.test_sets])]
    wers = decode_and_score(args.exp_dir / job_name(best), every, args.data_dir, args.batch_size, args.device)
    logging.info("best lambda on %s: %g (WER %.2f); %s", args.valid_set, best, best_wer,
                 ", ".join(f"{k} WER {v:.2f}" for k, v in wers.items()))
    return best


def read_best(grid_tsv: Path, key: str = "lambda") -> Optional[str]:
    """The value after ``# best: <key>=`` in a grid TSV (``None`` when absent)."""
    if not grid_tsv.is_file():
        return None
    match = re.search(rf"^# best: .*\b{key}=(\S+)", grid_tsv.read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else None


# ------------------------------------------------------------------ results
def train_steps(job: Path) -> Optional[int]:
    """Optimizer steps of an ESPnet training (the last ``[train] ... total_count`` of its log)."""
    log = job / "train.log"
    if not log.is_file():
        return None
    counts = re.findall(r"epoch results: \[train\].*?total_count=(\d+)", log.read_text(encoding="utf-8", errors="replace"))
    return int(counts[-1]) if counts else None


def _score(exp_dir: Path, system: Optional[str], test_set: str):
    from espnet_delta.scoring import load_score

    if not system:
        return None
    path = exp_dir / system / "decode" / test_set / "score_wer"
    return load_score(path) if (path / "score.json").is_file() else None


def _table(exp_dir: Path, rows: Sequence[Tuple[str, Optional[str], str]], sets: Sequence[str], with_steps: bool) -> List[str]:
    """rows: (label, system dir relative to exp_dir, note); the first row is the baseline."""
    from espnet_delta.scoring import wer_numbers
    from espnet_delta.scoring.significance import compare_utterances, paired_bootstrap

    test = sets[-1]
    base = _score(exp_dir, rows[0][1], test)
    head = "|system|model|" + ("steps|" if with_steps else "") + "|".join(f"{s} WER" for s in sets) + \
        f"|{test} rel. to baseline|p vs baseline|"
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    for label, system, note in rows:
        cells = [label, f"`{system}`" if system else "-"]
        if with_steps:
            steps = train_steps(exp_dir / system) if system else None
            cells.append(note if note else (str(steps) if steps is not None else "-"))
        for s in sets:
            sc = _score(exp_dir, system, s)
            cells.append(f"{wer_numbers(sc.counts)['Err']:.1f}" if sc else "-")
        mine = _score(exp_dir, system, test)
        if mine is None or base is None or system == rows[0][1]:
            cells += ["-", "-"]
        else:
            rel = 100.0 * (mine.wer - base.wer) / base.wer if base.wer else math.nan
            ea, eb, words = compare_utterances(base.utterances, mine.utterances)
            p = paired_bootstrap(ea, eb, words).p_value
            cells += [f"{rel:+.1f} %", f"{p:.3f}"]
        out.append("|" + "|".join(cells) + "|")
    return out


def format_results(args: argparse.Namespace) -> str:
    exp = args.exp_dir
    ref = args.reference
    aug_rel, kids_rel = args.aug_exp_dir, args.kids_exp_dir
    lam = read_best(exp / kids_rel / GRID_NAME)
    from espnet_delta.recipe.merge_grid import chosen_job

    sa_plain, sa_aug = chosen_job(exp, "sa"), chosen_job(exp / aug_rel, "sa")
    zero_shot = f"{kids_rel}/{JOB_PREFIX}{lam}" if lam is not None else None
    further = args.further_note
    out = [
        "## Augmentation task vectors and their transfer to a second child corpus",
        "",
        f"tau_aug = theta_aug - theta_orig, where theta_orig is `ft_{ref}` (fine-tuned on `{args.train_set}`) and "
        f"theta_aug the same fine-tuning with augmentation ({args.aug_note}); lambda * tau_aug is added to the model "
        f"fine-tuned on the second child corpus ({args.kids_corpus}), lambda chosen on `{args.kids_sets[0]}` "
        f"(WER per lambda in `{kids_rel}/{GRID_NAME}`), reported on `{args.kids_sets[-1]}`. "
        f"\"then fine-tune\": trained further on `{args.kids_train_set}` ({further}); the control row trains the "
        "baseline the same way. steps: optimizer steps of the row's own training (the further fine-tuning rows: "
        "the extra steps). p: paired bootstrap (1000 resamples) against the corpus's baseline on the test set.",
        "",
        f"### {args.corpus}: `{args.train_set}`",
        "",
        *_table(exp, [("baseline (theta_orig)", f"ft_{ref}", ""),
                      ("+ augmentation (theta_aug)", f"{aug_rel}/ft_{ref}", ""),
                      ("SA merge (child + adult)", sa_plain, ""),
                      ("SA merge + augmentation", f"{aug_rel}/{sa_aug}" if sa_aug else None, "")],
                args.sets, with_steps=False),
        "",
        f"### {args.kids_corpus}: `{args.kids_train_set}`",
        "",
        *_table(exp, [("baseline", f"{kids_rel}/ft_{ref}", ""),
                      (f"+ transfer zero-shot (lambda={lam})", zero_shot, "0"),
                      ("baseline, fine-tuned further (control)", f"{kids_rel}/ft_{ref}_further", ""),
                      (f"+ transfer (lambda={lam}) then fine-tune", f"{zero_shot}_ft" if zero_shot else None, "")],
                args.kids_sets, with_steps=True),
        "",
    ]
    grid = exp / kids_rel / GRID_NAME
    if grid.is_file():
        pairs = [line.split("\t") for line in grid.read_text(encoding="utf-8").splitlines()[1:] if not line.startswith("#")]
        out += [f"lambda grid, {args.kids_sets[0]} WER: " + ", ".join(f"{s}: {w}" for s, w in pairs), ""]
    return "\n".join(out)


# ------------------------------------------------------------------ CLI
def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid", help="zero-shot transfer over a lambda grid, chosen on dev")
    g.add_argument("--target", type=Path, required=True, help="job dir of the model fine-tuned on the second corpus")
    g.add_argument("--aug", type=Path, required=True, help="job dir of theta_aug (fine-tuned with augmentation)")
    g.add_argument("--orig", type=Path, required=True, help="job dir of theta_orig (same corpus, no augmentation)")
    g.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    g.add_argument("--data_dir", type=Path, required=True)
    g.add_argument("--valid_set", required=True)
    g.add_argument("--test_sets", nargs="+", required=True)
    g.add_argument("--exp_dir", type=Path, required=True, help="where the transfer_s<lambda> job dirs go")
    g.add_argument("--batch_size", type=int, default=8)
    g.add_argument("--device", default="cpu")
    r = sub.add_parser("results", help="the Markdown section of RESULTS.md")
    r.add_argument("--exp_dir", type=Path, required=True)
    r.add_argument("--reference", required=True, help="upstream name (ft_<name> job dirs)")
    r.add_argument("--aug_exp_dir", default="aug", help="theta_aug's exp dir, relative to --exp_dir")
    r.add_argument("--kids_exp_dir", default="kids", help="the second corpus's exp dir, relative to --exp_dir")
    r.add_argument("--corpus", default="the first child corpus",
                   help="the first corpus's name in the headings (local/transfer.sh: the recipe's, egs2/<corpus>/asr1)")
    r.add_argument("--kids_corpus", default="the second child corpus",
                   help="the second corpus's name (local/transfer.sh: mini_kids where it generates it)")
    r.add_argument("--train_set", default="train")
    r.add_argument("--kids_train_set", default="kids_train")
    r.add_argument("--sets", nargs="+", default=["dev", "test"], help="first: dev, last: test")
    r.add_argument("--kids_sets", nargs="+", default=["kids_dev", "kids_test"], help="first: dev, last: test")
    r.add_argument("--aug_note", default="speed perturbation and SpecAugment")
    r.add_argument("--further_note", default="a few epochs")
    r.add_argument("--out", type=Path, required=True)
    add_log_level_argument(p)  # before the sub-command: transfer_stage --log_level DEBUG grid ...
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    if args.command == "grid":
        run_grid(args)
    else:
        write_text_atomic(args.out, format_results(args) + "\n")
        logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
