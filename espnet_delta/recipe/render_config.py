"""Write an ESPnet config: a base YAML with dotted-key overrides.

    python -m espnet_delta.recipe.render_config --base conf/finetune.yaml --out exp/ft_wavlm/train.yaml \\
        --per_model wavlm \\
        --set frontend_conf.frontend_conf.upstream=wavlm_local --set-from conf/upstreams.yaml:wavlm=frontend_conf.frontend_conf

Values after ``=`` are parsed as YAML (``3`` is an int, ``[a, b]`` a list).

A base may hold per-model training options (the paper's fine-tuning warms up wav2vec2
twice as long as WavLM and HuBERT) in a top-level ``per_model`` mapping: model name ->
{dotted key: value}. ``--per_model NAME`` applies entry NAME (a name without an entry
keeps the base's values); ``per_model`` itself never reaches the written config, which
ESPnet would refuse. The order is: base, ``per_model``, ``--set-from``, ``--set``.
"""

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import load_yaml, set_dotted, write_yaml_atomic

PER_MODEL = "per_model"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def per_model_overrides(config: Dict[str, Any], name: Optional[str], where: Path) -> Dict[str, Any]:
    """Remove ``per_model`` from ``config``; return the {dotted key: value} overrides of ``name``."""
    table = config.pop(PER_MODEL, None)
    if table is None:
        return {}
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"{where}: {PER_MODEL} must map model names to {{dotted.key: value}} mappings")
    if name is None:
        logging.info("%s: no --per_model given; %s entries %s not applied", where, PER_MODEL, sorted(table))
        return {}
    if name not in table:
        logging.info("%s: no %s entry for %r (has %s); the base values apply", where, PER_MODEL, name, sorted(table))
        return {}
    return dict(table[name])


def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    config = load_yaml(args.base)
    try:
        overrides = per_model_overrides(config, args.per_model, args.base)
    except ValueError as e:
        p.error(str(e))
    for key, value in overrides.items():
        set_dotted(config, str(key), value)
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
