"""Score ASR output like sclite; write RESULTS.md; test two systems for significance.

Score one system on one test set (prints the Sum/Avg line):

    python -m espnet_delta.bin.score --ref data/test/text --hyp exp/sys/decode_test/text \\
        [--utt2spk data/test/utt2spk] --out_dir exp/sys/decode_test/score_wer \\
        [--system sys] [--test_set test] [--no_sctk | --require_sctk]

  writes ref.trn, hyp.trn, result.txt, result.sclite.txt (when SCTK is installed; its
  counts must equal ours or the command fails) and score.json (word and character
  alignments) into --out_dir.

RESULTS.md from scored dirs (ESPnet's environment block; WER and CER tables of systems x
test sets; per test set ESPnet-style WER and CER tables, with --baseline a
paired-bootstrap p-value column):

    python -m espnet_delta.bin.score --results_md RESULTS.md \\
        --scored exp/*/decode_*/score_wer [--baseline wavlm] [--n_resamples 1000] [--seed 0] \\
        [--command "the command line that produced the results"] \\
        [--seed_runs 0=exp 1=exp/seed1 2=exp/seed2]   # --seeds: mean/std over seeds, pooled p-values

Significance of the difference between two scored dirs of the same test set
(paired bootstrap + per-utterance matched pairs; sc_stats' MAPSSWE too when SCTK is
installed and --no_sctk is not given):

    python -m espnet_delta.bin.score --compare exp/a/decode_test/score_wer exp/b/decode_test/score_wer \\
        [--n_resamples 1000] [--seed 0] [--out compare.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence


from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.scoring import (
    SctkError,
    compare_utterances,
    find_sctk_tool,
    format_summary,
    load_score,
    matched_pairs_test,
    paired_bootstrap,
    run_mapsswe,
    score,
    speaker_counts,
    write_results_md,
)
from espnet_delta.fileio import write_text_atomic
from espnet_delta.recipe.names import scored_dirs
from espnet_delta.scoring.seeds import format_seeds_md


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__, option_file=True)
    one = parser.add_argument_group("score one system")
    one.add_argument("--ref", type=Path, help="reference Kaldi text")
    one.add_argument("--hyp", type=Path, help="hypothesis Kaldi text")
    one.add_argument("--utt2spk", type=Path, default=None, help="speakers (default: each utterance its own)")
    one.add_argument("--out_dir", type=Path, help="score dir to write")
    one.add_argument("--system", default=None, help="system name (default: exp/<system>/.../score_wer)")
    one.add_argument("--test_set", default=None, help="test set name (default: data/<test_set>/text)")
    add_bool_argument(one, "--no_sctk", help="do not run sclite even when installed")
    add_bool_argument(one, "--require_sctk", help="fail when sclite is not installed")
    many = parser.add_argument_group("RESULTS.md / significance")
    many.add_argument("--results_md", type=Path, default=None, help="write this RESULTS.md from --scored dirs")
    many.add_argument("--scored", nargs="+", type=Path, default=[], help="scored dirs (with score.json)")
    many.add_argument("--baseline", default=None, help="system to test the others against in RESULTS.md")
    many.add_argument("--title", default="RESULTS", help="RESULTS.md title")
    many.add_argument("--command", default=None,
                      help="command line recorded in RESULTS.md (default: this command's own)")
    many.add_argument("--append_md", nargs="+", type=Path, default=[],
                      help="Markdown files appended to RESULTS.md (e.g. exp/analysis/figures.md)")
    many.add_argument("--seed_runs", nargs="+", type=seed_run, default=[], metavar="SEED=EXP_DIR",
                      help="the exp dirs of the training seeds of a --seeds run (their scored dirs are found "
                           "there); with two or more, RESULTS.md gets the section of espnet_delta.scoring.seeds")
    many.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("DIR_A", "DIR_B"),
                      help="significance test between two scored dirs")
    many.add_argument("--out", type=Path, default=None, help="--compare: also write the results as JSON here")
    many.add_argument("--n_resamples", type=int, default=1000, help="bootstrap resamples")
    many.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_log_level_argument(parser)
    return parser


def seed_run(value: str) -> tuple:
    """``SEED=EXP_DIR`` -> (seed, exp dir)."""
    seed, sep, exp_dir = value.partition("=")
    if not sep or not seed.isdigit() or not exp_dir:
        raise argparse.ArgumentTypeError(f"expected SEED=EXP_DIR, got {value!r}")
    return int(seed), Path(exp_dir)


def seeds_section(args: argparse.Namespace) -> str:
    """The RESULTS.md section over the seeds of ``--seed_runs`` ("" with fewer than two)."""
    if len(args.seed_runs) < 2:
        return ""
    runs = {}
    for seed, exp_dir in args.seed_runs:
        dirs = scored_dirs(exp_dir)
        if not dirs:
            logging.warning("seed %d: no scored dirs in %s; left out of the seeds section", seed, exp_dir)
            continue
        runs[seed] = [load_score(d) for d in dirs]
    return format_seeds_md(runs, args.baseline, args.n_resamples, args.seed)


def _compare(args: argparse.Namespace) -> None:
    a, b = (load_score(d) for d in args.compare)
    if a.test_set != b.test_set:
        logging.warning("comparing different test set names: %r vs %r", a.test_set, b.test_set)
    errors_a, errors_b, words = compare_utterances(a.utterances, b.utterances)
    boot = paired_bootstrap(errors_a, errors_b, words, n_resamples=args.n_resamples, seed=args.seed)
    pairs = matched_pairs_test(errors_a, errors_b)
    result = {"a": {"system": a.system, "dir": str(args.compare[0])},
              "b": {"system": b.system, "dir": str(args.compare[1])},
              "test_set": a.test_set, "bootstrap": boot.as_dict(), "matched_pairs": pairs.as_dict()}
    print(f"A={a.system} WER {boot.wer_a:.2f}  B={b.system} WER {boot.wer_b:.2f}  delta(B-A) {boot.delta:+.2f} "
          f"[{boot.ci_low:+.2f}, {boot.ci_high:+.2f}] ({boot.confidence:.0%} CI)")
    print(f"paired bootstrap ({boot.n_resamples} resamples, seed {boot.seed}): p = {boot.p_value:.4f}, "
          f"P(B better) = {boot.prob_b_better:.3f}")
    print(f"matched pairs over utterances: z = {pairs.z:.3f}, p = {pairs.p_value:.4g}")
    if args.use_sctk is not False and find_sctk_tool("sclite") and find_sctk_tool("sc_stats"):
        dir_a, dir_b = args.compare
        try:
            mapsswe = run_mapsswe(dir_a / "ref.trn", dir_a / "hyp.trn", dir_b / "hyp.trn")
        except SctkError as e:  # optional extra: sc_stats crashes on some inputs (e.g. two error-free systems)
            if args.use_sctk:
                raise
            logging.warning("sc_stats MAPSSWE failed, left out: %s", e)
        else:
            result["mapsswe"] = {"segments": mapsswe.segments, "z": mapsswe.z, "p_value": mapsswe.p_value,
                                 "significant_at_0.05": mapsswe.significant}
            print(f"sc_stats MAPSSWE ({mapsswe.segments} segments): z = {mapsswe.z:.3f}, "
                  f"p = {mapsswe.p_value:.4g}")
    elif args.use_sctk:
        raise SctkError("--require_sctk: sclite/sc_stats not installed")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")


def own_command(cmd: Optional[Sequence[str]]) -> str:
    """This command's line as a shell would run it (``cmd`` or ``sys.argv[1:]``)."""
    argv: List[str] = list(sys.argv[1:] if cmd is None else cmd)
    return shlex.join([Path(sys.executable).name, "-m", "espnet_delta.bin.score", *argv])


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.no_sctk and args.require_sctk:
        parser.error("give at most one of --no_sctk and --require_sctk")
    args.use_sctk = False if args.no_sctk else (True if args.require_sctk else None)
    setup_logging(args.log_level)
    modes = [args.results_md is not None, args.compare is not None, args.hyp is not None or args.ref is not None]
    if sum(modes) != 1:
        parser.error("give exactly one of: --ref/--hyp/--out_dir, --results_md with --scored, --compare")
    run_command(lambda: _score(parser, args, cmd), args.log_level)


def _score(parser, args, cmd) -> None:
    if args.results_md is not None:
        if not args.scored:
            parser.error("--results_md needs --scored DIR [DIR ...]")
        write_results_md(args.results_md, args.scored, args.baseline, args.n_resamples, args.seed, args.title,
                         command=args.command or own_command(cmd), append=args.append_md,
                         sections=[seeds_section(args)])
        logging.info("wrote %s from %d scored dirs", args.results_md, len(args.scored))
    elif args.compare is not None:
        _compare(args)
    else:
        for name in ("ref", "hyp", "out_dir"):
            if getattr(args, name) is None:
                parser.error(f"--{name} is required")
        summary = score(args.ref, args.hyp, args.out_dir, args.utt2spk, args.use_sctk, args.system, args.test_set)
        table = format_summary(speaker_counts(summary.utterances)).splitlines()
        print("\n".join(line for line in table if "SPKR" in line or "Sum/Avg" in line))


if __name__ == "__main__":
    main()
