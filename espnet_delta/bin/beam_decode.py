"""Beam-search decoding (and scoring) of ESPnet attention-decoder models, e.g. fine-tuned Whisper.

    python -m espnet_delta.bin.beam_decode exp/whisper_child exp/whisper_adult --model_name valid.acc.best.pth \\
        --decode_config conf/whisper/decode.yaml --test dev=data/dev/wav.scp --test test=data/test/wav.scp --ref_dir data

The counterpart of :mod:`espnet_delta.bin.decode` (greedy CTC) for models with a decoder:
ESPnet's own ``Speech2Text`` (``espnet2.bin.asr_inference``: BatchBeamSearch over the decoder,
plus CTC prefix scores when ``ctc_weight`` > 0) with the options of ``--decode_config``, run in
one process for every job and test set. For each job directory (ESPnet's ``config.yaml`` and
the model file) it writes ``<job>/decode/<set>/text`` and, with ``--ref_dir``, the scoring
report ``<job>/decode/<set>/score_wer/``, the same files as the greedy decoder, so the rows
join RESULTS.md beside the CTC systems. The weights are read with ``torch.load(weights_only=True)``
and must match the config exactly. A set whose ``text`` exists is not decoded again.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.cli import add_bool_argument, add_log_level_argument, add_test_set_argument, new_parser, \
    parse_test_sets, run_command, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__, option_file=True)
    parser.add_argument("jobs", nargs="+", type=Path, help="job directories with config.yaml and the model file")
    parser.add_argument("--model_name", default="valid.acc.best.pth", help="model file inside each job directory")
    parser.add_argument("--decode_config", type=Path, default=None,
                        help="YAML of Speech2Text options (beam_size, ctc_weight, penalty, maxlenratio, ...)")
    add_test_set_argument(parser, "wav.scp")
    parser.add_argument("--ref_dir", type=Path, default=None, help="score against <ref_dir>/<set>/text (and utt2spk)")
    parser.add_argument("--device", default="cpu")
    add_bool_argument(parser, "--no_sctk", help="do not cross-check with SCTK's sclite")
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    from espnet_delta.asr.decoding import DecodeOptions, read_decode_config
    from espnet_delta.bin.decode import decode

    parser = get_parser()
    args = parser.parse_args(cmd)
    tests = parse_test_sets(parser, args.test)
    if args.decode_config is not None and not args.decode_config.is_file():
        parser.error(f"--decode_config {args.decode_config}: " + ("a folder, not a file" if args.decode_config.is_dir() else "no such file"))
    setup_logging(args.log_level)
    try:
        read_decode_config(args.decode_config)  # refuse a bad config before any model is built
    except ValueError as e:
        parser.error(str(e))
    # no --decode_config: Speech2Text's own defaults (an empty option set), still beam search
    options = DecodeOptions(beam=True, decode_config=args.decode_config, device=args.device, ref_dir=args.ref_dir,
                            use_sctk=False if args.no_sctk else None)
    run_command(lambda: decode(args.jobs, args.model_name, tests, options), args.log_level)


if __name__ == "__main__":
    main()
