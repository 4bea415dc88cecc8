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
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from espnet_delta.bin import add_log_level_argument, setup_logging, parse_test_sets


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", nargs="+", type=Path, help="fusion job directories with config.yaml and the model file")
    parser.add_argument("--model_name", default="valid.wer_ctc.best.pth", help="model file inside each job directory")
    parser.add_argument("--test", action="append", default=None, metavar="NAME=SCP",
                        help="test set name and its cached feats.scp (repeatable; required)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    add_log_level_argument(parser)
    return parser


def gate_means_job(job: Path, model_name: str, tests: Sequence[Tuple[str, Path]], batch_size: int,
                   device: str) -> List[Path]:
    """Write the missing or outdated ``gate_means.tsv`` of one MoE system; returns the paths written."""
    from espnet_delta.analysis import gates

    config, model_file = job / "config.yaml", job / model_name
    for path in (config, model_file):
        if not path.exists():
            raise FileNotFoundError(f"{job}: {path.name} not found: {path} (is the system trained?)")
    if not gates.is_moe_config(config):
        logging.info("%s: not a MoE fusion system; no gate means", job)
        return []
    model, written = None, []
    for name, scp in tests:
        out = job / "decode" / name / gates.GATE_MEANS_FILE
        if gates.gate_means_up_to_date(out, scp, [model_file, config, scp]):
            logging.info("%s %s: %s is up to date", job, name, out)
            continue
        if model is None:
            from espnet_delta.bin.decode import load_model

            model = load_model(config, model_file, device)
            names = gates.expert_names(model.frontend)
        utts, means = gates.model_gate_means(model, scp, batch_size, device, desc=f"gates {job.name} {name}")
        gates.write_gate_means_file(out, utts, means, names)
        logging.info("%s %s: wrote %s (%d utterances; mean %s)", job, name, out, len(utts),
                     ", ".join(f"{n} {m:.3f}" for n, m in zip(names, means.mean(0))))
        written.append(out)
    return written


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    tests = parse_test_sets(parser, args.test)
    setup_logging(args.log_level)
    try:
        for job in args.jobs:
            gate_means_job(job, args.model_name, tests, args.batch_size, args.device)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        logging.error("%s", e)
        logging.debug("traceback", exc_info=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
