"""The dry run (``local/asr.sh --dry_run true``, docs/dry_run.md): its data and decoding caps,
and the report: per-stage usage and the full run's device-hour arithmetic.

    python -m espnet_delta.recipe.dry_run --data_dir D --sets dev test --max_utts 4
    python -m espnet_delta.recipe.dry_run --decode_config conf/whisper/decode.yaml --max_tokens 8 --out D/decode.yaml

The training cap is the planner's (``plan --dry_run_steps``, :func:`train_config.dry_run_cap`).
``trim`` keeps the first N utterances (sorted ids) of each decoded set, after recording every
set's audio seconds (``dry_run_audio.json`` in the data dir, written once: the screening saw
the untrimmed sets). The report (:func:`build_report`) reads the usage log every process
appended (:func:`espnet_delta.cli.usage_record`) and each training job's ``train.yaml``
(capped) and ``train.full.yaml`` (the un-capped rendering): every number in it is either
*measured* in this run or *arithmetic* on measured rates.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import yaml

from espnet_delta.cli import add_log_level_argument, new_parser, reports_bad_input, setup_logging
from espnet_delta.fileio import load_yaml, write_text_atomic

AUDIO_JSON = "dry_run_audio.json"
SAMPLE_RATE = 16000
#: full-run audio hours per data set, seed 001 (arXiv 2601.20142, "MyST" section): MyST ~240 h
#: transcribed (the screening transcribes all of it), 133 h train, 21 h dev, 25 h test after
#: the filters; LibriSpeech 100 h (train-clean-100, its Table 4). train_<h>h subsets are h hours.
SEED_HOURS = {"train": 133.0, "dev": 21.0, "test": 25.0, "libri_train": 100.0}
SEED_SCREENED_HOURS = 240.0
#: commands whose cost scales with the audio they read, and the stage they run in
AUDIO_COMMANDS = {"espnet_delta.bin.transcribe_whisper": "screening", "espnet_delta.bin.extract_features": "extraction"}


# ---------------------------------------------------------------- trim


def utt_ids(path: Path) -> List[str]:
    return [line.split(maxsplit=1)[0] for line in path.read_text().splitlines() if line.strip()]


def set_audio_seconds(set_dir: Path) -> float:
    """Audio seconds of a Kaldi data dir: its utt2dur, else the wav.scp files' headers."""
    if (set_dir / "utt2dur").is_file():
        return sum(float(line.split()[1]) for line in (set_dir / "utt2dur").read_text().splitlines() if line.strip())
    import soundfile

    total = 0.0
    for line in (set_dir / "wav.scp").read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and Path(parts[1]).is_file():
            total += soundfile.info(parts[1]).duration
    return total


def trim_set(set_dir: Path, max_utts: int) -> int:
    """Keep the first ``max_utts`` utterances (sorted ids) in every per-utterance file of the dir
    (a file whose first field is an utterance id); spk2utt is rebuilt from utt2spk."""
    ids = set(utt_ids(set_dir / "wav.scp"))
    keep = set(sorted(ids)[:max_utts])
    for path in sorted(set_dir.iterdir()):
        if not path.is_file() or path.name == "spk2utt":
            continue
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if not lines or lines[0].split(maxsplit=1)[0] not in ids:
            continue  # not keyed by utterance
        kept = [line for line in lines if line.split(maxsplit=1)[0] in keep]
        if len(kept) != len(lines):
            write_text_atomic(path, "".join(f"{line}\n" for line in kept))
    if (set_dir / "utt2spk").is_file():
        spk: Dict[str, List[str]] = {}
        for line in (set_dir / "utt2spk").read_text().splitlines():
            utt, speaker = line.split()
            spk.setdefault(speaker, []).append(utt)
        write_text_atomic(set_dir / "spk2utt", "".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk.items())))
    return len(keep)


def trim(data_dir: Path, sets: Iterable[str], max_utts: int) -> None:
    audio_json = data_dir / AUDIO_JSON
    if not audio_json.is_file():  # before any trim: the audio the screening and the corpus hold
        audio = {d.name: round(set_audio_seconds(d), 3) for d in sorted(data_dir.iterdir()) if (d / "wav.scp").is_file()}
        write_text_atomic(audio_json, json.dumps(audio, indent=1) + "\n")
    for name in dict.fromkeys(sets):
        if (data_dir / name / "wav.scp").is_file():
            n = trim_set(data_dir / name, max_utts)
            logging.info("dry run: %s: first %d utterances kept", data_dir / name, n)


# ---------------------------------------------------------------- report


def read_usage(path: Path) -> List[Dict[str, Any]]:
    """The usage log's records; a malformed line is dropped and counted."""
    records, bad = [], 0
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        logging.warning("%s: %d malformed lines dropped", path, bad)
    return records


#: the label's suffix of a process that ran outside any stage (no $ESPNET_DELTA_STAGE: a command run
#: by hand, or by a script that sets no stage, with $ESPNET_DELTA_USAGE_LOG exported)
NO_STAGE = "(no stage)"


def stage_label(record: Dict[str, Any]) -> str:
    """The record's stage (``setup``, ``0``, ``4`` ...); without one, its command and ``(no stage)``,
    so such processes are one row per command instead of one row with an empty label."""
    stage = str(record.get("stage") or "").strip()
    return stage or f"{record.get('command') or 'unknown command'} {NO_STAGE}"


def stage_key(stage: Any) -> tuple:
    """Numbered stages in order, then the others (``setup``), then the rows without a stage."""
    try:
        return (0, float(stage))
    except (TypeError, ValueError):
        return (2 if str(stage).endswith(NO_STAGE) else 1, math.inf)


def stage_usage(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per stage (measured): processes, summed wall seconds, peak RSS (MiB), peak GPU (MiB), most parameters."""
    stages: Dict[str, Dict[str, Any]] = {}
    for r in records:
        if r.get("command") == "asr_train":  # inside its train_jobs process, whose line counts it
            continue
        label = stage_label(r)
        s = stages.setdefault(label, {"stage": label, "processes": 0, "wall_s": 0.0, "rss_mib": 0.0, "gpu_mib": None,
                                      "params": None})
        s["processes"] += 1
        s["wall_s"] += float(r.get("wall_s") or 0.0)
        s["rss_mib"] = max(s["rss_mib"], float(r.get("rss_mib") or 0.0), float(r.get("children_rss_mib") or 0.0))
        if r.get("gpu_bytes") is not None:
            s["gpu_mib"] = max(s["gpu_mib"] or 0.0, r["gpu_bytes"] / 2**20)
    for r in records:
        s = stages.get(stage_label(r))
        if s is not None and r.get("params"):
            s["params"] = max(s["params"] or 0, int(r["params"]))
    return sorted(stages.values(), key=lambda s: stage_key(s["stage"]))


def set_of(config: Dict[str, Any]) -> str:
    """The training set's name: the folder of the first train data path (``data/<set>/wav.scp``)."""
    return Path(config["train_data_path_and_name_and_type"][0][0]).parent.name


def set_hours(name: str, hours: Dict[str, float]) -> Optional[float]:
    if name in hours:
        return hours[name]
    if name.startswith("train_") and name.endswith("h"):
        try:
            return float(name[len("train_"):-1])
        except ValueError:
            return None
    return None


def full_steps(config: Dict[str, Any], train_utts: Optional[float], train_hours: Optional[float] = None
               ) -> Optional[int]:
    """Optimizer steps of the un-capped config: max_epoch x iterations per epoch / accum_grad, the
    iterations being num_iters_per_epoch when set, else (sorted/unsorted batches) N // batch_size,
    else (numel batches of a waveform input) the set's samples at 16 kHz / batch_bins, rounded up
    (ESPnet's numel bins also count the token ids: a few per second, under 0.1 % of the samples)."""
    accum = int(config.get("accum_grad", 1) or 1)
    epochs = int(config.get("max_epoch", 1))
    if config.get("num_iters_per_epoch"):
        return epochs * int(config["num_iters_per_epoch"]) // accum
    if config.get("batch_type") in ("sorted", "unsorted") and train_utts:
        return epochs * max(int(train_utts) // int(config["batch_size"]), 1) // accum
    if config.get("batch_type") == "numel" and train_hours and config.get("batch_bins"):
        batches = math.ceil(train_hours * 3600.0 * SAMPLE_RATE / float(config["batch_bins"]))
        return epochs * max(batches // accum, 1)
    return None


#: the dry-run caps of a training's batch: (config key, unit in the report, the run.sh option)
BATCH_CAPS = (("batch_size", "utterances", "--dry_run_max_batch"), ("batch_bins", "input samples", "--dry_run_max_bins"))


def capped_batch(capped: Dict[str, Any], full: Dict[str, Any]) -> tuple:
    """(capped, full, cap) of the batch key the dry run lowered (``train.yaml`` vs ``train.full.yaml``),
    or (0, 0, None) when neither ``batch_size`` nor ``batch_bins`` was capped."""
    for key, unit, option in BATCH_CAPS:
        batch, full_batch = int(capped.get(key, 0) or 0), int(full.get(key, 0) or 0)
        if 0 < batch < full_batch:
            return batch, full_batch, (unit, option)
    return 0, 0, None


def training_rows(records: Sequence[Dict[str, Any]], hours: Dict[str, float], mean_utt_s: Dict[str, float]
                  ) -> List[Dict[str, Any]]:
    """One row per trained job: measured parameters, steps and seconds per step; the full config's
    steps and device hours (arithmetic)."""
    rows = []
    for r in records:
        if r.get("command") != "asr_train":
            continue
        job = Path(r["job"])
        capped = load_yaml(job / "train.yaml") if (job / "train.yaml").is_file() else {}
        full = load_yaml(job / "train.full.yaml") if (job / "train.full.yaml").is_file() else capped
        accum = int(capped.get("accum_grad", 1) or 1)
        train_set = set_of(full) if full else ""
        h = set_hours(train_set, hours)
        utts = h * 3600.0 / mean_utt_s[train_set] if h is not None and mean_utt_s.get(train_set) else None
        steps = full_steps(full, utts, h) if full else None
        sps = r.get("seconds_per_step")
        batch, full_batch, unit = capped_batch(capped, full)
        scale = full_batch / batch if unit else 1.0  # --dry_run_max_batch/_bins: linear in the batch
        rows.append({
            "stage": stage_label(r), "job": job.name, "params": r.get("params"),
            "steps_run": r["iterations"] // accum if r.get("iterations") is not None else None,
            "seconds_per_step": sps, "train_set": train_set, "full_train_utts": utts, "full_steps": steps,
            "full_hours": steps * sps * scale / 3600.0 if steps is not None and sps is not None else None,
            "batch": batch or None, "full_batch": full_batch, "unit": unit, "dir": job,
        })
    names = [row["job"] for row in rows]
    for row in rows:  # one name in two exp dirs (transfer.sh's aug/ and kids/ ft_<ref>): <parent>/<name>
        if names.count(row["job"]) > 1:
            row["job"] = f"{row['dir'].parent.name}/{row['job']}"
    return rows


def audio_rows(records: Sequence[Dict[str, Any]], audio_s: Dict[str, float], full_hours: Dict[str, float]
               ) -> List[Dict[str, Any]]:
    """Screening and extraction: measured seconds per audio second (summed process wall seconds over
    the audio they read) and the full corpus's device hours (arithmetic)."""
    rows = []
    for command, what in AUDIO_COMMANDS.items():
        wall = sum(float(r.get("wall_s") or 0.0) for r in records if r.get("command") == command)
        audio = audio_s.get(what)
        if not wall or not audio:
            continue
        rate = wall / audio
        rows.append({"what": what, "wall_s": wall, "audio_s": audio, "rate": rate, "full_hours_audio": full_hours[what],
                     "full_device_hours": full_hours[what] * rate})
    return rows


def device_name(records: Sequence[Dict[str, Any]]) -> str:
    gpus = sorted({r["device"] for r in records if r.get("device")})
    if gpus:
        return "GPU " + ", ".join(gpus)
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"CPU {model} ({os.cpu_count()} cores)"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def build_report(records: Sequence[Dict[str, Any]], hours: Dict[str, float], screened_hours: float,
                 mean_utt_s: Dict[str, float], audio_s: Dict[str, float], device: str) -> str:
    """report.md: every number marked (M) measured here or (A) arithmetic."""
    lines = ["# Dry-run report", "",
             f"Rates measured on: **{device}**. (M) = measured in this dry run; (A) = arithmetic: the full run's "
             "count times a measured rate. A CPU rate is not a GPU rate: the device hours below hold for the device "
             "named here only; measure on the target GPU for GPU hours.", "",
             "## Per stage (M)", "", "| stage | processes | wall s (M) | peak RSS MiB (M) | peak GPU MiB (M) | parameters (M) |",
             "|---|---|---|---|---|---|"]
    for s in stage_usage(records):
        lines.append(f"| {s['stage']} | {s['processes']} | {fmt(s['wall_s'], 1)} | {fmt(s['rss_mib'], 0)} | "
                     f"{fmt(s['gpu_mib'], 0)} | {fmt(s['params'])} |")
    train = training_rows(records, hours, mean_utt_s)
    lines += ["", "## Trainings", "",
              "full steps = the un-capped config's optimizer steps (train.full.yaml: max_epoch x num_iters_per_epoch / "
              "accum_grad; max_epoch x (utterances // batch_size) / accum_grad with utterances = the set's hours x 3600 / "
              "mean utterance seconds; or max_epoch x (the set's samples at 16 kHz / batch_bins) / accum_grad for numel "
              "batches); full hours = full steps x seconds per step / 3600.", "",
              "| stage | job | parameters (M) | steps run (M) | s/step (M) | train set | full steps (A) | full device hours (A) |",
              "|---|---|---|---|---|---|---|---|"]
    for t in train:
        lines.append(f"| {t['stage']} | {t['job']} | {fmt(t['params'])} | {fmt(t['steps_run'])} | "
                     f"{fmt(t['seconds_per_step'], 3)} | {t['train_set']} | {fmt(t['full_steps'])} | {fmt(t['full_hours'])} |")
    capped_batches: Dict[tuple, List[str]] = {}
    for t in train:
        if t["batch"]:
            capped_batches.setdefault((t["batch"], t["full_batch"], t["unit"]), []).append(f"`{t['job']}`")
    for (batch, full_batch, (unit, option)), jobs in capped_batches.items():
        lines += ["", f"Batch capped at {batch:,} of the config's {full_batch:,} {unit} ({option}): "
                  f"{', '.join(jobs)}; their full device hours are full steps x s/step x {full_batch:,}/{batch:,} "
                  "(A: a step's time taken as linear in the batch)."]
    unknown = sorted({t["train_set"] for t in train if t["full_steps"] is None and set_hours(t["train_set"], hours) is None})
    if unknown:
        lines += ["", "No full-run hours for " + ", ".join(f"`{x}`" for x in unknown) + ": the trainings on it get no "
                  "full steps and no device hours; give the hours (run.sh --dry_run_hours \"" + " ".join(f"{x}=H" for x in unknown) + "\")."]
    full_audio = {"screening": screened_hours, "extraction": sum(hours.get(k, 0.0) for k in ("train", "dev", "test"))}
    audio = audio_rows(records, audio_s, full_audio)
    lines += ["", "## Per audio second", "",
              "s per audio s = summed wall seconds of the command's processes (model loading included) / the audio "
              "seconds they read; full device hours = full audio hours x that rate.", "",
              "| what | wall s (M) | audio s (M) | s per audio s (M) | full audio hours (given) | full device hours (A) |",
              "|---|---|---|---|---|---|"]
    for a in audio:
        lines.append(f"| {a['what']} | {fmt(a['wall_s'], 1)} | {fmt(a['audio_s'], 1)} | {fmt(a['rate'], 4)} | "
                     f"{fmt(a['full_hours_audio'], 1)} | {fmt(a['full_device_hours'])} |")
    total = sum(t["full_hours"] or 0.0 for t in train) + sum(a["full_device_hours"] for a in audio)
    lines += ["", f"Total (A): {fmt(total)} device hours on {device} (trainings + screening + extraction; "
              "decoding, merging and analysis not included).", ""]
    return "\n".join(lines)


def parse_hours(items: Sequence[str]) -> Dict[str, float]:
    """SET=HOURS items over no hours; the item ``seed001`` stands for :data:`SEED_HOURS` (MyST and
    LibriSpeech of seed 001), ``none`` for no amounts (a corpus whose seed gives none). No items at
    all: seed 001's."""
    hours: Dict[str, float] = {} if items else dict(SEED_HOURS)
    for item in items:
        if item == "seed001":
            hours.update(SEED_HOURS)
            continue
        if item == "none":
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--hours expects SET=HOURS, got {item!r}")
        hours[name] = float(value)
    return hours


def cap_decode_config(src: Path, out: Path, max_tokens: int) -> None:
    """A beam-search config with at most ``max_tokens`` output tokens (ESPnet: a negative
    ``maxlenratio`` is a fixed maximum length), everything else as in ``src``."""
    config = load_yaml(src)
    config["maxlenratio"] = -float(max_tokens)
    write_text_atomic(out, yaml.safe_dump(config, sort_keys=False))


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("--data_dir", type=Path, default=None, help="trim: the Kaldi data dirs")
    p.add_argument("--sets", nargs="*", default=[], help="trim: the sets to cut (absent ones are skipped)")
    p.add_argument("--max_utts", type=int, default=4, help="trim: utterances kept per set")
    p.add_argument("--decode_config", type=Path, default=None, help="cap this beam-search config (with --max_tokens, --out)")
    p.add_argument("--max_tokens", type=int, default=0, help="most output tokens of the capped decode config")
    p.add_argument("--out", type=Path, default=None, help="the capped decode config")
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Stage 1's cap of a dry run (``--data_dir``), or a capped decode config (``--decode_config``)."""
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    if args.decode_config is not None:
        if args.out is None or args.max_tokens <= 0:
            p.error("--decode_config needs --out and --max_tokens > 0")
        cap_decode_config(args.decode_config, args.out, args.max_tokens)
    elif args.data_dir is not None:
        trim(args.data_dir, args.sets, args.max_utts)
    else:
        p.error("give --data_dir (trim) or --decode_config")


if __name__ == "__main__":
    main()
