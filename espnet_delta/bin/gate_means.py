"""Per-utterance mean gate weights of MoE fusion systems, one table per test set (stage 9).

    python -m espnet_delta.bin.gate_means exp/fusion_wavlm+dhubert_moe exp/fusion_wavlm+dhubert_concat \\
        --model_name valid.wer_ctc.best.pth --test test=dump/feats/test/feats.scp --batch_size 8 --device cpu

For each job directory whose ``config.yaml`` fuses with ``moe`` writes
``<job>/decode/<set>/gate_means.tsv``: header ``utt_id<TAB><reference><TAB><other
models...>`` (the expert names of the system's ``frontend_conf``), then per utterance
the gate weight of each expert averaged over the utterance's valid frames (Table 5
of arXiv 2601.20142). Other systems are skipped, so the stage engine can pass every
fusion system. A table that lists every utterance of the set and is not older than the
model file, its config and the features is kept (delete it to redo).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.recipe.names import CKPT_WER
from espnet_delta.cli import add_log_level_argument, add_test_set_argument, new_parser, parse_test_sets, run_command, \
    setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("jobs", nargs="+", type=Path, help="fusion job directories with config.yaml and the model file")
    parser.add_argument("--model_name", default=CKPT_WER, help="model file inside each job directory")
    add_test_set_argument(parser, "cached feats.scp")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    from espnet_delta.analysis.gates import write_gate_means

    parser = get_parser()
    args = parser.parse_args(cmd)
    tests = parse_test_sets(parser, args.test)
    setup_logging(args.log_level)
    run_command(lambda: [write_gate_means(job, args.model_name, tests, args.batch_size, args.device)
                         for job in args.jobs], args.log_level, also=(RuntimeError,))  # not a MoE model


if __name__ == "__main__":
    main()
