"""Write the feature-extraction config of stage 6 from the recipe's upstream table.

    python -m espnet_delta.recipe.make_extract_config --upstream_conf conf/upstreams.yaml \\
        --reference wavlm --others hubert wav2vec2 \\
        --finetuned 'exp/ft_{name}/valid.wer_ctc.best.pth' --out dump/feats/extract.yaml
"""

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import load_yaml, write_yaml_atomic


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream_conf", type=Path, required=True, help="YAML: name -> {upstream, path_or_url}")
    p.add_argument("--reference", required=True)
    p.add_argument("--others", nargs="+", required=True)
    p.add_argument("--finetuned", required=True, help="fine-tuned checkpoint path, {name} is replaced")
    p.add_argument("--mode", default="delta", choices=["delta", "full"])
    p.add_argument("--layer", default="last")
    p.add_argument("--hidden_norm", default="auto")
    p.add_argument("--out", type=Path, required=True)
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    table = load_yaml(args.upstream_conf)

    def spec(name: str) -> dict:
        if name not in table:
            p.error(f"{args.upstream_conf}: no entry {name!r} (has {sorted(table)})")
        finetuned = Path(args.finetuned.format(name=name))
        if not finetuned.is_file():
            p.error(f"fine-tuned checkpoint of {name} not found: {finetuned} (run stage 4)")
        return {**table[name], "finetuned": str(finetuned), "name": name}

    layer = args.layer if args.layer == "last" else int(args.layer)
    config = {
        "reference": spec(args.reference),
        "others": [spec(o) for o in args.others],
        "mode": args.mode,
        "layer": layer,
        "hidden_norm": args.hidden_norm,
    }
    write_yaml_atomic(config, args.out)
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
