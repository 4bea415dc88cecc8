"""Write the feature-extraction config of stage 6 from the recipe's upstream table.

    python -m espnet_delta.recipe.make_extract_config --upstream_conf conf/upstreams.yaml \\
        --reference wavlm --others hubert wav2vec2 \\
        --finetuned 'exp/ft_{name}/valid.wer_ctc.best.pth' --out dump/feats/extract.yaml

``--finetuned_map NAME=PATH ...`` takes a model's fine-tuned checkpoint from PATH instead
of the ``--finetuned`` template, e.g. the deltas of models fine-tuned on adult speech
(Table 4 of arXiv 2601.20142: ``--finetuned_map hubert=exp/ft_hubert_adult/valid.wer_ctc.best.pth``).
Every checkpoint must exist; a missing one stops the command with one error line naming it.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from espnet_delta.cli import add_log_level_argument, reports_bad_input, setup_logging
from espnet_delta.fileio import load_yaml, write_yaml_atomic


class ExtractConfigError(ValueError):
    """The upstream table, a model name or a checkpoint does not fit the requested extraction."""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream_conf", type=Path, required=True, help="YAML: name -> {upstream, path_or_url}")
    p.add_argument("--reference", required=True)
    p.add_argument("--others", nargs="+", required=True)
    p.add_argument("--finetuned", required=True, help="fine-tuned checkpoint path, {name} is replaced")
    p.add_argument("--finetuned_map", nargs="*", default=[], metavar="NAME=PATH",
                   help="fine-tuned checkpoint of these models instead of --finetuned (an ESPnet model file)")
    p.add_argument("--mode", default="delta", choices=["delta", "full"])
    p.add_argument("--layer", default="last",
                   help="last, a hidden-state index, or all (every hidden state, for cached_fusion with an interface)")
    p.add_argument("--hidden_norm", default="auto")
    p.add_argument("--out", type=Path, required=True)
    add_log_level_argument(p)
    return p


def parse_finetuned_map(items: Sequence[str], known: Sequence[str]) -> Dict[str, str]:
    """``["hubert=PATH", ...]`` -> ``{"hubert": "PATH"}``; names must be models of this extraction."""
    out: Dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ExtractConfigError(f"--finetuned_map: expected NAME=PATH, got {item!r}")
        if name not in known:
            raise ExtractConfigError(f"--finetuned_map: {name!r} is not a model of this extraction ({list(known)})")
        if name in out:
            raise ExtractConfigError(f"--finetuned_map: {name!r} given twice")
        out[name] = path
    return out


def build_config(args) -> dict:
    """The extraction config (:class:`espnet_delta.features.config.ExtractionConfig` as a dict)."""
    table = load_yaml(args.upstream_conf)
    overrides = parse_finetuned_map(args.finetuned_map, [args.reference, *args.others])

    def spec(name: str) -> dict:
        if name not in table:
            raise ExtractConfigError(f"{args.upstream_conf}: no entry {name!r} (has {sorted(table)})")
        if not isinstance(table[name], dict):
            raise ExtractConfigError(f"{args.upstream_conf}: entry {name!r} must be a mapping "
                                     f"{{upstream: ..., path_or_url: ...}}, got {table[name]!r}")
        if name in overrides:
            finetuned, hint = Path(overrides[name]), "given by --finetuned_map"
        else:
            finetuned, hint = Path(args.finetuned.format(name=name)), "run stage 4"
        if not finetuned.is_file():
            raise ExtractConfigError(f"fine-tuned checkpoint of {name} not found: {finetuned} ({hint})")
        return {**table[name], "finetuned": str(finetuned), "name": name}

    return {
        "reference": spec(args.reference),
        "others": [spec(o) for o in args.others],
        "mode": args.mode,
        "layer": args.layer if args.layer in ("last", "all") else int(args.layer),
        "hidden_norm": args.hidden_norm,
    }


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    try:
        config = build_config(args)
    except (ValueError, FileNotFoundError) as e:  # ExtractConfigError, or the YAML's own, naming the file
        logging.error("%s", e)
        sys.exit(1)
    for model in [config["reference"], *config["others"]]:
        logging.info("%s: fine-tuned checkpoint %s", model["name"], model["finetuned"])
    write_yaml_atomic(config, args.out)
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
