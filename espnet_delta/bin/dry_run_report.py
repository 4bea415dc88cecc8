"""The dry run's report: per-stage usage and the full run's device-hour arithmetic (docs/dry_run.md).

    python -m espnet_delta.bin.dry_run_report --usage dry_run/exp/dry_run/usage.jsonl \
        --exp_dir dry_run/exp --data_dir dry_run/data --out dry_run/exp/dry_run/report.md

Writes ``--out`` and prints it. Per stage (measured): processes, wall seconds, peak RSS, peak GPU
memory, parameters. Per training (measured): parameters, steps run, seconds per optimizer step;
(arithmetic) the un-capped config's steps times that rate. Screening and extraction (measured):
seconds per audio second; (arithmetic) the full corpus's hours (--hours, --screened_hours;
defaults from seed 001) times that rate. The device the rates were measured on is named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from espnet_delta.cli import add_log_level_argument, new_parser, setup_logging
from espnet_delta.fileio import write_text_atomic
from espnet_delta.recipe import dry_run


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("--usage", type=Path, nargs="+", required=True,
                   help="the usage log(s) (JSON lines); several: one report over all (transfer.sh's own stages "
                        "and its local/asr.sh runs)")
    p.add_argument("--exp_dir", type=Path, default=Path("dry_run/exp"))
    p.add_argument("--data_dir", type=Path, default=Path("dry_run/data"),
                   help="the dry run's data dirs: audio read (utt2dur, dry_run_audio.json), mean utterance seconds")
    p.add_argument("--feats_dir", type=Path, default=None, help="the extracted sets (default: <data_dir>/../dump/feats)")
    p.add_argument("--out", type=Path, required=True, help="report.md")
    p.add_argument("--hours", nargs="*", default=[],
                   help=f"SET=HOURS of the full run (default: seed 001's {dry_run.SEED_HOURS}; train_<h>h = h)")
    p.add_argument("--screened_hours", type=float, default=dry_run.SEED_SCREENED_HOURS,
                   help="audio hours the full run's Whisper screening transcribes (seed 001: ~240 h MyST)")
    p.add_argument("--mean_utt_seconds", type=float, default=None,
                   help="mean utterance seconds of the full sets (utterances per hour, for batch-size configs); "
                        "default: each set's mean in the dry run's data (the stand-in corpus)")
    p.add_argument("--device", default=None, help="the device the rates were measured on (default: detected)")
    add_log_level_argument(p)
    return p


def mean_utt_seconds(data_dir: Path, fixed: Optional[float]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for d in sorted(data_dir.iterdir()) if data_dir.is_dir() else []:
        if (d / "utt2dur").is_file():
            durs = [float(line.split()[1]) for line in (d / "utt2dur").read_text().splitlines() if line.strip()]
            if durs:
                out[d.name] = fixed or sum(durs) / len(durs)
    return out


def audio_seconds(data_dir: Path, feats_dir: Path) -> Dict[str, float]:
    """screening: the MyST sets before the dry run's trim; extraction: the extracted sets as trimmed."""
    audio: Dict[str, float] = {}
    before = data_dir / dry_run.AUDIO_JSON
    if before.is_file():
        table = json.loads(before.read_text())
        audio["screening"] = sum(table.get(s, 0.0) for s in ("train", "dev", "test"))
    sets = [d.name for d in sorted(feats_dir.iterdir()) if (d / "feats.scp").is_file()] if feats_dir.is_dir() else []
    if sets:
        audio["extraction"] = sum(dry_run.set_audio_seconds(data_dir / s) for s in sets if (data_dir / s).is_dir())
    return audio


def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    try:
        hours = dry_run.parse_hours(args.hours)
    except ValueError as e:
        p.error(str(e))
    records = [r for usage in args.usage for r in dry_run.read_usage(usage)]
    if not records:
        p.error(f"{' '.join(map(str, args.usage))}: no usage records (run local/asr.sh --dry_run true first)")
    feats_dir = args.feats_dir or args.data_dir.parent / "dump" / "feats"
    text = dry_run.build_report(records, hours, args.screened_hours, mean_utt_seconds(args.data_dir, args.mean_utt_seconds),
                                audio_seconds(args.data_dir, feats_dir), args.device or dry_run.device_name(records))
    write_text_atomic(args.out, text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
