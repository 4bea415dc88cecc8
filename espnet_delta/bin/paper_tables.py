"""Write Tables 1-5 of arXiv 2601.20142 as Markdown sections from scored system dirs.

    python -m espnet_delta.bin.paper_tables --tables 1 2 3 4 5 \\
        --size Full=exp --size 10h=exp/sizes/10 --size 5h=exp/sizes/5 --size 1h=exp/sizes/1 \\
        [--test_set test] [--gate_sets dev test] [--compare_paper auto] \\
        [--out exp/paper_tables.md] [--results_md RESULTS.md] [--n_resamples 1000] [--seed 0]

Each ``--size LABEL=EXP_DIR`` is one training-data size (its own fine-tuning and fusion
run), in column order; the first is the full training set (Tables 4 and 5 use only it).
``--compare_paper`` puts the paper's published numbers beside the run's: ``cells`` (the
published value and the difference beside every cell), ``once`` (the published table once
below each table, marked as not comparable: the mini recipes), ``none``; ``auto`` is
``cells`` when every size label is one of the paper's (full, 10 h, 5 h, 1 h), else ``once``.
Every table becomes a section ``## Table N: <title>`` that replaces the section of
the same number in ``--out`` and, with ``--results_md``, in that file too; other content
is kept, writes are atomic. ``exp/paper_tables.md`` is the lasting copy: local/asr.sh's
RESULTS.md is rebuilt from the score dirs on every stage 9, so the tables written
into RESULTS.md directly last until the next recipe run (which appends
``exp/paper_tables.md`` when its write_results does). Cells not scored yet read ``–``.

What the tables still need (``<size label><TAB><run><TAB><path>``, run ``main`` or
``adult`` = the run on deltas of adult-speech models; nothing written):

    python -m espnet_delta.bin.paper_tables --tables 1 3 --size Full=exp --list_missing

The fusion systems a set of tables trains, merged from ``<systems_dir>/table<N>_systems.yaml``
(a system defined twice must be defined alike):

    python -m espnet_delta.bin.paper_tables --tables 1 2 3 --systems_dir conf/paper \\
        --write_systems exp/paper_systems.yaml
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Sequence

from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.fileio import load_yaml, write_yaml_atomic
from espnet_delta.scoring.md_sections import write_sections
from espnet_delta.scoring.paper_tables import COMPARE_MODES, TABLES, ScoreBook, SizeRoot, build_table, resolve_compare


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--tables", nargs="+", type=int, required=True, choices=sorted(TABLES),
                        help="tables of arXiv 2601.20142 to write")
    parser.add_argument("--size", action="append", default=[], metavar="LABEL=EXP_DIR",
                        help="a training-data size and the exp dir of its run (repeatable; the first is the full set)")
    parser.add_argument("--test_set", default="test", help="the set whose WERs the tables show")
    parser.add_argument("--gate_sets", nargs="+", default=None, help="sets of Table 5's gate weights (default: --test_set)")
    parser.add_argument("--child_label", default="MyST", help="Table 4: name of the child training set")
    parser.add_argument("--adult_label", default="LibriSpeech", help="Table 4: name of the adult training set")
    parser.add_argument("--compare_paper", default="auto", choices=COMPARE_MODES,
                        help="the paper's numbers: per cell with the difference, the table once (not comparable), "
                             "none; auto: cells when every size is one of the paper's, else once")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file whose table sections are replaced")
    parser.add_argument("--results_md", type=Path, default=None, help="also replace the sections in this RESULTS.md")
    parser.add_argument("--n_resamples", type=int, default=1000, help="paired-bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="paired-bootstrap seed")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the * marks")
    add_bool_argument(parser, "--list_missing", help="print what the tables still need; write nothing")
    parser.add_argument("--systems_dir", type=Path, default=None, help="dir of table<N>_systems.yaml (--write_systems)")
    parser.add_argument("--write_systems", type=Path, default=None,
                        help="write the fusion systems of --tables, merged, to this YAML")
    add_log_level_argument(parser)
    return parser


def parse_sizes(items: Sequence[str]) -> List[SizeRoot]:
    sizes = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--size expects LABEL=EXP_DIR, got {item!r}")
        sizes.append(SizeRoot(label, Path(path)))
    labels = [s.label for s in sizes]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--size labels must differ, got {labels}")
    return sizes


def merge_systems(files: Sequence[Path]) -> dict:
    """The union of the systems of ``files``; a name defined differently in two files is an error."""
    merged, origin = {}, {}
    for path in files:
        for name, system in load_yaml(path).items():
            if name in merged and merged[name] != system:
                raise ValueError(f"fusion system {name!r} is defined differently in {origin[name]} and {path}")
            merged.setdefault(name, system)
            origin.setdefault(name, path)
    return merged


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    run_command(lambda: _tables(parser, args), args.log_level)


def _tables(parser, args) -> None:
    tables = list(dict.fromkeys(args.tables))
    if args.write_systems is not None:
        if args.systems_dir is None:
            parser.error("--write_systems needs --systems_dir")
        files = [args.systems_dir / f"table{n}_systems.yaml" for n in tables]
        write_yaml_atomic(merge_systems(files), args.write_systems)
        logging.info("wrote %s: the fusion systems of Tables %s", args.write_systems, tables)
        return
    if not args.size:
        parser.error("--size LABEL=EXP_DIR is required (the first is the full training set)")
    sizes = parse_sizes(args.size)
    book = ScoreBook(args.n_resamples, args.seed, args.alpha)
    built = [build_table(n, book, sizes, args.test_set, args.gate_sets or [args.test_set],
                         child_label=args.child_label, adult_label=args.adult_label) for n in tables]
    if args.list_missing:
        for entry in dict.fromkeys(m for t in built for m in t.missing):
            print("\t".join(map(str, entry)))
        return
    if args.out is None and args.results_md is None:
        parser.error("give --out and/or --results_md (or --list_missing)")
    compare = resolve_compare(args.compare_paper, sizes)
    logging.info("paper numbers: %s", compare)
    sections = [t.markdown(compare) for t in built]
    for path in (args.out, args.results_md):
        if path is not None:
            write_sections(path, sections)
            logging.info("wrote Tables %s into %s", tables, path)
    for t in built:
        if t.missing:
            logging.warning("Table %d: %d inputs not scored yet (run with --list_missing to see them)",
                            t.number, len(dict.fromkeys(t.missing)))


if __name__ == "__main__":
    main()
