"""Linear language-ID probe on every layer of a frozen SSL upstream: CSV, PNG and a RESULTS.md section.

    python -m espnet_delta.bin.langid_probe --upstream_conf conf/upstreams.yaml --model wavlm \\
        --train_dir data/train --test_dir data/test --out_dir exp/analysis

The data dirs need ``utt2lang`` (the multilingual corpus writes it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


from espnet_delta.cli import add_log_level_argument, new_parser, run_command, setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True, prog="python -m espnet_delta.bin.langid_probe")
    p.add_argument("--upstream_conf", type=Path, default=None, help="(required) YAML: name -> {upstream, path_or_url}")
    p.add_argument("--model", default=None, help="(required) entry of --upstream_conf to probe (frozen, pre-trained)")
    p.add_argument("--train_dir", type=Path, default=None, help="(required) Kaldi dir with wav.scp + utt2lang to fit on")
    p.add_argument("--test_dir", type=Path, default=None, help="(required) Kaldi dir of other speakers to measure on")
    p.add_argument("--out_dir", type=Path, default=None, help="(required) writes langid_probe.{csv,png,md}")
    p.add_argument("--link_base", type=Path, default=Path("."), help="the .md image link is relative to this (RESULTS.md's dir)")
    p.add_argument("--max_utts", type=int, default=0, help="use at most this many utterances per dir (0: all)")
    p.add_argument("--seed", type=int, default=0)
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(cmd)
    for name in ("upstream_conf", "model", "train_dir", "test_dir", "out_dir"):
        if getattr(args, name) is None:
            parser.error(f"--{name} is required")
    setup_logging(args.log_level)
    return run_command(lambda: _probe(args), args.log_level, returns_status=True)


def _probe(args) -> int:
    import torch

    from espnet_delta.analysis.langid_probe import (
        chance_accuracy,
        pooled_hidden_states,
        probe_accuracy,
        read_labelled_audio,
        write_probe_outputs,
    )
    from espnet_delta.fileio import load_yaml
    from espnet_delta.ssl.embeddings import UpstreamSpec
    from espnet_delta.ssl.upstream import FrozenUpstream, load_upstream

    table = load_yaml(args.upstream_conf)
    if args.model not in table:
        logging.error("%s: no entry %r (has %s)", args.upstream_conf, args.model, sorted(table))
        return 2
    spec = UpstreamSpec.from_config(table[args.model], f"{args.upstream_conf}:{args.model}")
    start = time.monotonic()
    torch.manual_seed(args.seed)
    upstream = FrozenUpstream(load_upstream(spec.upstream, spec.path_or_url, spec.finetuned))
    train = read_labelled_audio(args.train_dir, args.max_utts)
    test = read_labelled_audio(args.test_dir, args.max_utts)
    train_x, test_x = pooled_hidden_states(upstream, train), pooled_hidden_states(upstream, test)
    train_y, test_y = [r[2] for r in train], [r[2] for r in test]
    accuracies = probe_accuracy(train_x, train_y, test_x, test_y, seed=args.seed)
    chance = chance_accuracy(train_y, test_y)
    paths = write_probe_outputs(args.out_dir, args.model, accuracies, chance, len(train), len(test), args.link_base)
    logging.info("language-ID probe of %s: %s (chance %.3f) -> %s in %.1f s", args.model,
                 " ".join(f"{a:.3f}" for a in accuracies), chance, paths["csv"], time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
