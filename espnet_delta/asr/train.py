"""ESPnet's ASR training (``espnet2.bin.asr_train``) with the plugin registered.

:func:`train` takes exactly the options of ``python -m espnet2.bin.asr_train``; the
job runner (:mod:`espnet_delta.recipe.train_jobs`) calls it in-process, the command
:mod:`espnet_delta.bin.asr_train` wraps it. Importing this module installs the
registration hooks of :mod:`espnet_delta.launch` (``frontend: delta_fusion``,
``encoder: identity``, ``model: espnet_ctc_wer``, ...), also in multiprocessing "spawn"
workers, which re-import the modules their target came from.

Interrupted trainings: ESPnet's trainer writes ``checkpoint.pth``, then ``<N>epoch.pth``, then
the ``latest.pth`` and ``*.best.pth`` links, with plain ``torch.save``; a kill in mid-write
left a truncated ``checkpoint.pth`` that ``--resume true`` then loaded (and failed on), and a
kill between the writes left epoch N's model missing and the best link on an older epoch.
:func:`train` therefore makes every ``torch.save`` to a path atomic (a temporary sibling,
renamed when complete; :func:`atomic_torch_saves`) and, before resuming, checks
``checkpoint.pth``: a damaged one is moved aside with one warning naming it (the training
starts again), a sound one gets its epoch's model file and links back (:func:`check_resume`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from espnet_delta import launch
from espnet_delta.cli import USAGE_LOG_ENV, append_usage, usage_record
from espnet_delta.fileio import DiskFullError, atomic_path, is_disk_full

launch.install()


def import_task() -> None:
    """Import ESPnet's ASR task now (~13 s, with the plugin registered), e.g. in a parent
    process whose forked children then train without paying it again."""
    import espnet2.tasks.asr  # noqa: F401


def train(cmd: Optional[Sequence[str]] = None) -> None:
    """``espnet2.bin.asr_train.main(cmd)``; ``None`` reads ``sys.argv``."""
    from espnet2.bin.asr_train import main as espnet_main

    start = time.time()
    try:
        prepare_resume(list(sys.argv[1:] if cmd is None else cmd))
        with atomic_torch_saves():
            espnet_main(None if cmd is None else list(cmd))
    except OSError as e:  # a full disk: one line (the partial file is gone; the rerun resumes)
        if not is_disk_full(e):
            raise
        argv = list(sys.argv[1:] if cmd is None else cmd)
        where = e.filename or (argv[argv.index("--output_dir") + 1] if "--output_dir" in argv else ".")
        logging.error("%s", e if isinstance(e, DiskFullError) else DiskFullError(e.errno, where))  # e.g. a plot
        raise SystemExit(1) from None
    if os.environ.get(USAGE_LOG_ENV) and cmd is not None and "--output_dir" in cmd:
        job = Path(cmd[list(cmd).index("--output_dir") + 1])
        stats = {k: v for k, v in train_log_stats(job / "train.log").items() if v is not None}
        append_usage(usage_record(command="asr_train", job=str(job), wall_s=round(time.time() - start, 3), **stats))


_UNITS = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def train_log_stats(log: Path) -> Dict[str, Any]:
    """From ESPnet's train.log: the model's parameter count (its model summary, 2 decimals),
    iterations (the last epoch's train total_count) and mean seconds per optimizer step
    (train_time, which ESPnet measures from one optimizer step to the next)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    out: Dict[str, Any] = {"params": None, "iterations": None, "seconds_per_step": None}
    found = re.findall(r"Total Number of model parameters: ([\d.]+) ?([KMBT]?)", text)
    if found:
        value, unit = found[-1]
        out["params"] = int(round(float(value) * _UNITS[unit]))
    results = re.findall(r"epoch results: \[train\] (.*?)(?:, \[valid\]|$)", text, re.M)
    if results:
        fields = dict(kv.split("=", 1) for kv in results[-1].split(", ") if "=" in kv)
        if "total_count" in fields:
            out["iterations"] = int(fields["total_count"])
        if "train_time" in fields:
            out["seconds_per_step"] = float(fields["train_time"])
    return out


CHECKPOINT = "checkpoint.pth"  # ESPnet's resume state (model, optimizers, schedulers, reporter)


@contextlib.contextmanager
def atomic_torch_saves() -> Iterator[None]:
    """Inside the block every ``torch.save(obj, path)`` writes a temporary sibling (to an open
    file, so the archive's record name does not depend on the temporary name), flushes it to
    disk and renames it over ``path``: a kill leaves the old file or the new one, never half."""
    import torch

    original = torch.save

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return original(obj, f, *args, **kwargs)
        try:
            with atomic_path(f, fsync=True) as tmp, open(tmp, "wb") as out:
                original(obj, out, *args, **kwargs)
        except (RuntimeError, OSError) as e:  # torch wraps the write's OSError in a RuntimeError
            cause = e if is_disk_full(e) else e.__context__
            if not is_disk_full(cause):
                raise
            raise DiskFullError(cause.errno, f, needed=_tensor_bytes(obj)) from e

    torch.save = save
    try:
        yield
    finally:
        torch.save = original


def _tensor_bytes(obj: Any) -> int:
    """About the size of ``torch.save(obj)``: its tensors' bytes (the pickle adds little)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def damaged(path: Path) -> Optional[str]:
    """Why ``path`` is not a complete torch archive (a zip whose every record matches its
    CRC: catches truncation and flipped bytes without unpickling), or ``None``."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{type(e).__name__}: {e}"
    return None if bad is None else f"record {bad} fails its CRC check"


def _options(argv: List[str]) -> Optional[Any]:
    """The training's options as ESPnet parses them (config file included); ``None`` when they
    do not parse (ESPnet reports that itself)."""
    from espnet2.tasks.asr import ASRTask

    try:
        return ASRTask.get_parser().parse_args(argv)
    except SystemExit:
        return None


def prepare_resume(argv: List[str]) -> None:
    """On rank 0: remove the temporary files of saves that a kill interrupted (as large as a
    checkpoint each), then :func:`check_resume` for a training that will resume (``--resume true``)."""
    if "--output_dir" not in argv or os.environ.get("SLURM_PROCID", "0") != "0":
        return
    output_dir = Path(argv[argv.index("--output_dir") + 1])
    stale = sorted(output_dir.glob(".*.pth.*.tmp")) if output_dir.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    if stale:
        logging.info("%s: removed %d unfinished save(s) of an interrupted run: %s", output_dir, len(stale),
                     ", ".join(t.name for t in stale))
    if not (output_dir / CHECKPOINT).exists():
        return
    args = _options(argv)
    if args is not None and args.resume:
        check_resume(output_dir, [tuple(c) for c in args.best_model_criterion])


def checkpoint_globals() -> List[type]:
    """What an ESPnet ``checkpoint.pth`` pickles besides tensors (its reporter's numpy scalars and
    dtypes, timedeltas): ``torch.serialization.safe_globals`` for loading it with weights_only=True."""
    import datetime

    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [v for v in vars(getattr(np, "dtypes", np)).values() if isinstance(v, type) and issubclass(v, np.dtype)]
    return [core.multiarray.scalar, np.dtype, datetime.timedelta, *dtypes]


def check_resume(output_dir: Path, criteria: Sequence[Tuple[str, str, str]]) -> None:
    """Before ESPnet resumes from ``<output_dir>/checkpoint.pth``: move a damaged one aside
    (``checkpoint.pth.damaged``; the training starts again from epoch 1), else restore what a
    kill between ESPnet's writes can leave missing: the epoch's ``<N>epoch.pth`` (the
    checkpoint's model), ``latest.pth`` and each ``<phase>.<key>.best.pth`` link of ``criteria``."""
    import torch
    from espnet2.train.reporter import Reporter

    ckpt = output_dir / CHECKPOINT
    why = damaged(ckpt)
    if why is not None:
        aside = ckpt.with_name(CHECKPOINT + ".damaged")
        os.replace(ckpt, aside)
        logging.warning("%s is damaged (%s), moved to %s: this training starts again from epoch 1", ckpt, why, aside)
        return
    try:
        with torch.serialization.safe_globals(checkpoint_globals()):
            states = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:  # a type this check does not know: ESPnet's own load decides
        logging.info("%s: not checked for its epoch's files (%s)", ckpt, str(e).splitlines()[0])
        return
    reporter = Reporter()
    reporter.load_state_dict(states["reporter"])
    epoch = reporter.get_epoch()
    model = output_dir / f"{epoch}epoch.pth"
    if not model.exists():
        with atomic_torch_saves():
            torch.save(states["model"], model)
        logging.warning("%s: epoch %d's model was not written (interrupted): restored %s from it", ckpt, epoch, model)
    links = {"latest.pth": model.name}
    for phase, key, mode in criteria:
        if reporter.has(phase, key):
            links[f"{phase}.{key}.best.pth"] = f"{reporter.get_best_epoch(phase, key, mode)}epoch.pth"
    for name, target in links.items():
        link = output_dir / name
        if (output_dir / target).exists() and not (link.is_symlink() and os.readlink(link) == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
            logging.warning("%s: pointed %s to %s (the link was not updated before an interruption)",
                            output_dir, name, target)
