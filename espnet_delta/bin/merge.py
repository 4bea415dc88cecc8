"""Merge fine-tuned checkpoints that share one pre-trained base model.

    python -m espnet_delta.bin.merge --method sa \\
        --base exp/upstreams/wavlm.pt \\
        --models exp/asr_child/valid.wer_ctc.best.pth exp/asr_adult/valid.wer_ctc.best.pth \\
        --lambda 0.2 --alpha 0.8 --schedule depth_power --out exp/merged/sa.pth

Methods (M1 = first --models entry, whose container and non-merged tensors the output keeps):
  lerp      theta = c*theta_1 + (1-c)*theta_2        --coef c (default 0.5); no base needed
  ta        theta = base + sum_k c_k*tau_k           --coef c_1 .. c_K, or one shared c (default 1/K)
  ties      trim top-k %, elect sign, disjoint mean  --ties_topk 20 --ties_scale 1.0
  sa        Q/K/V only, per-layer child weight c_i   --schedule FORMULA --lambda --alpha | --schedule FILE.yaml
  transfer  theta = theta_1 + s*(theta_2 - base)     --models TARGET AUGMENTED --base ORIGINAL --coef s

SA schedules (c_i multiplies the child's task vector, 1 - c_i the adult's; each stack, e.g.
Whisper's encoder and decoder, over its own depth L):
  depth_power      c_i = lambda^(alpha^(L-1-i))   (lambda at the top layer, ~1 at the bottom)
  linear_exponent  c_i = lambda^(alpha*i)         (1 at the bottom layer, decaying with depth)
  adult_power      c_i = 1 - lambda^(alpha^i)     (adult weight lambda^(alpha^i): 1-lambda at the bottom, ~0 at the top)
  FILE.yaml        layer groups as the authors' release ({layers: [first, last], lambda, alpha,
                   extra: [regex, ...]}, c = lambda^alpha; layers in no group keep M1) or
                   explicit c_i ({coefficients: {encoder: [...], decoder: [...]}})
The c_i table is logged and written to --schedule_out (default: merge_schedule.tsv beside --out).

Inputs may be ESPnet ASR state dicts (S3PRL upstream under frontend.upstream[.upstream].model.,
Whisper under encoder.encoders./decoder.decoders.), bare S3PRL wavlm/hubert/wav2vec2 local
checkpoints or openai-whisper checkpoints ({dims, model_state_dict}); keys are aligned by the
upstream name, so a pre-trained openai-whisper file can be the base of ESPnet Whisper models.
Every option can also come from a YAML file given with --config; its keys are the option
names without dashes, except --lambda/--alpha, which are sa_lambda/sa_alpha.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from espnet2.utils.types import str_or_none

from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.merge import METHODS, SCHEDULES, MergeConfig, merge_files


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__, option_file=True)
    parser.add_argument("--method", choices=METHODS, default=None, help="merge method (required)")
    parser.add_argument("--base", type=str_or_none, default=None, help="pre-trained (base) checkpoint")
    parser.add_argument("--models", nargs="+", default=None, help="fine-tuned checkpoints, M1 first (required)")
    parser.add_argument("--out", default=None, help="output checkpoint path (required)")
    parser.add_argument("--coef", nargs="+", type=float, default=None, help="method coefficients (see above)")
    parser.add_argument("--lambda", "--sa_lambda", dest="sa_lambda", type=float, default=0.2,
                        help="SA: ratio of M1 at the top layer (depth_power) / decay base")
    parser.add_argument("--alpha", "--sa_alpha", dest="sa_alpha", type=float, default=0.8,
                        help="SA: depth decay of the ratio")
    parser.add_argument("--schedule", default="depth_power",
                        help=f"SA: one of {', '.join(SCHEDULES)} (with --lambda/--alpha) or a schedule YAML file")
    parser.add_argument("--schedule_out", type=str_or_none, default=None,
                        help="SA: where to write the c_i table (default: merge_schedule.tsv beside --out)")
    parser.add_argument("--ties_topk", type=float, default=20.0, help="TIES: percent of each task vector kept")
    parser.add_argument("--ties_scale", type=float, default=1.0, help="TIES: scale of the merged task vector")
    parser.add_argument("--keep_m1", action="append", default=[],
                        help="regex of tensors copied from M1 unchecked (repeatable), e.g. '^ctc\\.'")
    parser.add_argument("--reinit", action="append", default=[],
                        help="regex of tensors re-created at fine-tuning (e.g. 'token_embedding\\.'): "
                        "no task vector where the base's shape differs (repeatable)")
    parser.add_argument("--upstream_prefix", type=str_or_none, default=None,
                        help="upstream prefix inside ESPnet checkpoints (default: detected)")
    add_bool_argument(parser, "--allow_pickle", help="load with weights_only=False (trusted files only)")
    add_bool_argument(parser, "--progress", default=True, help="show a progress bar")
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    for name in ("method", "models", "out"):
        if getattr(args, name) is None:
            parser.error(f"--{name} is required")
    setup_logging(args.log_level)
    run_command(lambda: _merge(args), args.log_level)


def _merge(args) -> None:
    config = MergeConfig(
        method=args.method,
        coefs=args.coef,
        sa_lambda=args.sa_lambda,
        sa_alpha=args.sa_alpha,
        schedule=args.schedule,
        ties_topk=args.ties_topk,
        ties_scale=args.ties_scale,
        keep_m1=args.keep_m1,
        reinit=args.reinit,
    )
    merge_files(
        args.models,
        args.out,
        config,
        base_path=args.base,
        upstream_prefix=args.upstream_prefix,
        allow_pickle=args.allow_pickle,
        progress=args.progress,
        schedule_out=args.schedule_out,
    )


if __name__ == "__main__":
    main()
