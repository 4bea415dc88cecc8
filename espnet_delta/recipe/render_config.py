"""Write an ESPnet config: a base YAML with dotted-key overrides.

    python -m espnet_delta.recipe.render_config --base conf/finetune.yaml --out exp/ft_wavlm/train.yaml \\
        --set frontend_conf.frontend_conf.upstream=wavlm_local --set-from conf/upstreams.yaml:wavlm=frontend_conf.frontend_conf

Values after ``=`` are parsed as YAML (``3`` is an int, ``[a, b]`` a list).
"""

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

import yaml

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import load_yaml, set_dotted, write_yaml_atomic


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--set-from", dest="set_from", action="append", default=[], metavar="FILE:ENTRY=KEY",
        help="copy mapping ENTRY of YAML FILE to dotted KEY",
    )
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    config = load_yaml(args.base)
    for item in args.set_from:
        source, _, rest = item.partition(":")
        entry, _, key = rest.partition("=")
        table = load_yaml(Path(source))
        if entry not in table:
            p.error(f"{source}: no entry {entry!r} (has {sorted(table)})")
        set_dotted(config, key, table[entry])
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set expects KEY=VALUE, got {item!r}")
        set_dotted(config, key, yaml.safe_load(value))
    write_yaml_atomic(config, args.out)
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
