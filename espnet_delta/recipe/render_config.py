"""Write an ESPnet config: a base YAML with per-model and dotted-key overrides.

    python -m espnet_delta.recipe.render_config --base conf/finetune.yaml --out exp/aug/conf/finetune_aug.yaml \\
        --per_model wavlm --set max_epoch=15 --set-from conf/specaug.yaml:specaug=specaug

Values after ``=`` are parsed as YAML (``3`` is an int, ``[a, b]`` a list). ``--per_model NAME``
applies the base's ``per_model.NAME`` overrides (a name without an entry keeps the base's
values); ``per_model`` itself never reaches the written config. The order is: base,
``per_model``, ``--set-from``, ``--set``. The job planner renders train.yaml files with the
same code (:mod:`espnet_delta.recipe.train_config`); this command writes derived base
configs (local/transfer.sh).
"""

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.cli import add_log_level_argument, new_parser, reports_bad_input, setup_logging
from espnet_delta.fileio import write_yaml_atomic
from espnet_delta.recipe.train_config import PER_MODEL, render


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--per_model", default=None, metavar="NAME",
        help=f"apply the base's {PER_MODEL}.NAME overrides (a missing entry changes nothing)",
    )
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--set-from", dest="set_from", action="append", default=[], metavar="FILE:ENTRY=KEY",
        help="copy mapping ENTRY of YAML FILE to dotted KEY",
    )
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    try:
        config = render(args.base, args.per_model, args.set_from, args.sets)
    except (ValueError, OSError) as e:  # a bad or missing file: one usage line naming it
        p.error(str(e))
    write_yaml_atomic(config, args.out)
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
