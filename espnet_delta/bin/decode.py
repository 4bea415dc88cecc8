"""Greedy CTC decoding (and scoring) of ESPnet ASR models on several test sets, in one process.

    python -m espnet_delta.bin.decode exp/ft_wavlm exp/ft_hubert --model_name valid.wer_ctc.best.pth \\
        --test dev=data/dev/wav.scp --test test=data/test/wav.scp --input_type sound --ref_dir data

For each job directory (holding ESPnet's ``config.yaml`` and the model file) writes
``<job>/decode/<set>/text`` and, with ``--ref_dir``, a scoring report in
``<job>/decode/<set>/score_wer/`` against ``<ref_dir>/<set>/text``. One process
serves every system and test set (ESPnet's import costs ~16 s per process). A set
whose ``text`` exists is not decoded again (delete it to redo).

``--unit phn`` is for phone CTC models (``token_type: word`` over a phone token list,
``espnet_delta.recipe.families.interface``): hypotheses are the phones separated by spaces,
the reference is ``<ref_dir>/<set>/text.phn`` and the phone error rate (PER) is scored
into ``score_per/`` with phones compared as they are (no upper-casing or word
normalisation: :func:`espnet_delta.scoring.phones.normalize_phones`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.recipe.names import CKPT_WER
from espnet_delta.cli import add_bool_argument, add_log_level_argument, add_test_set_argument, new_parser, \
    parse_test_sets, run_command, setup_logging


def get_parser() -> argparse.ArgumentParser:
    from espnet_delta.asr.decoding import INPUT_TYPES, UNITS

    parser = new_parser(__doc__, option_file=True)
    parser.add_argument("jobs", nargs="+", type=Path, help="job directories with config.yaml and the model file")
    parser.add_argument("--model_name", default=CKPT_WER, help="model file inside each job directory")
    add_test_set_argument(parser)
    parser.add_argument("--input_type", default="sound", choices=INPUT_TYPES)
    parser.add_argument("--ref_dir", type=Path, default=None, help="score against <ref_dir>/<set>/text (and utt2spk)")
    parser.add_argument("--unit", default="char", choices=sorted(UNITS),
                        help="char: words (WER/CER, score_wer); phn: phones (PER against text.phn, score_per)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    add_bool_argument(parser, "--no_sctk", help="do not cross-check with SCTK's sclite")
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    from espnet_delta.asr.decoding import DecodeOptions

    parser = get_parser()
    args = parser.parse_args(cmd)
    tests = parse_test_sets(parser, args.test)
    setup_logging(args.log_level)
    options = DecodeOptions(unit=args.unit, input_type=args.input_type, batch_size=args.batch_size, device=args.device,
                            ref_dir=args.ref_dir, use_sctk=False if args.no_sctk else None)
    run_command(lambda: decode(args.jobs, args.model_name, tests, options), args.log_level)


def decode(jobs, model_name: str, tests, options) -> None:
    """Checks every input first, so that a bad one stops the command in one line before ESPnet
    (half a minute) or any model loads: each test set's scp (no bad line, not empty) and, for
    each job with a set left to decode, its ``config.yaml`` (YAML, a mapping) and model file."""
    from espnet_delta.asr.decoding import decode_jobs, hyp_file, read_entries
    from espnet_delta.fileio import load_yaml

    for _, scp in tests:
        if not read_entries(scp):
            raise ValueError(f"{scp}: no utterances")
    for job in map(Path, jobs):
        if all(hyp_file(job, name).is_file() for name, _ in tests):
            continue
        load_yaml(job / "config.yaml")
        model = job / model_name
        if not model.is_file():
            raise FileNotFoundError(f"{model}: model file not found" + (" (it is a folder)" if model.is_dir() else ""))
    decode_jobs(jobs, model_name, tests, options)


if __name__ == "__main__":
    main()
