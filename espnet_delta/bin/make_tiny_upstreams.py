"""Write tiny random WavLM / HuBERT / wav2vec2 checkpoints for S3PRL's *_local upstreams.

    python -m espnet_delta.bin.make_tiny_upstreams --out_dir exp/upstreams

writes ``<out_dir>/<arch>.pt`` for each architecture (skipped when present, so a
recipe stage can call it every time).
"""

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence


from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.ssl.tiny import ARCHITECTURES, LOCAL_UPSTREAM, TinyConfig, make_tiny_upstream


def get_parser() -> argparse.ArgumentParser:
    defaults = TinyConfig()
    p = new_parser(__doc__, option_file=True)
    p.add_argument("--out_dir", type=Path, default=None, help="directory for <arch>.pt (required)")
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    p.add_argument("--seed", type=int, default=0, help="base seed; arch k uses seed + k")
    p.add_argument("--num_layers", type=int, default=defaults.num_layers)
    p.add_argument("--embed_dim", type=int, default=defaults.embed_dim)
    p.add_argument("--ffn_dim", type=int, default=defaults.ffn_dim)
    p.add_argument("--num_heads", type=int, default=defaults.num_heads)
    p.add_argument("--conv_channels", type=int, default=defaults.conv_channels)
    p.add_argument("--feature_extractor", choices=["stack", "single"], default=defaults.feature_extractor,
                   help="stack: the real 7-layer CNN; single: one 400/320 conv (see TinyConfig)")
    add_bool_argument(p, "--overwrite", help="rewrite existing checkpoints")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.out_dir is None:
        parser.error("--out_dir is required")
    setup_logging(args.log_level)
    config = TinyConfig(
        num_layers=args.num_layers,
        embed_dim=args.embed_dim,
        ffn_dim=args.ffn_dim,
        num_heads=args.num_heads,
        conv_channels=args.conv_channels,
        feature_extractor=args.feature_extractor,
    )
    run_command(lambda: _make(args, config), args.log_level)


def _make(args, config: TinyConfig) -> None:
    for k, arch in enumerate(args.archs):
        path = make_tiny_upstream(
            arch, args.out_dir / f"{arch}.pt", seed=args.seed + k, config=config, overwrite=args.overwrite
        )
        logging.info("%s: upstream=%s path_or_url=%s", arch, LOCAL_UPSTREAM[arch], path)


if __name__ == "__main__":
    main()
