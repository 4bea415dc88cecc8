"""Run several ESPnet ASR trainings one after another from one process.

    python -m espnet_delta.recipe.train_jobs --ngpu 0 exp/ft_wavlm exp/ft_hubert

Each job directory holds a complete ESPnet config ``train.yaml`` (data paths,
shape files, token list and model options: an ESPnet config file may set any
command-line option). Importing ESPnet's ASR task costs ~16 s per process on the
build machines, so a stage trains all its models from one process. A job whose
``.done`` marker exists is skipped; an interrupted job resumes from ESPnet's
``checkpoint.pth`` (``--resume true``). Each job's log is ``<job>/train.log``.

Each training runs in a child forked from the process that imported ESPnet once
(``--fork_per_job true``, the default): the import is paid once, and whatever a training
leaves behind (allocator arenas, caches, a leak such as the S3PRL layer hooks that once
grew the multilingual recipe's SSHR trainings to 3.6 GB) goes with its child, so the
stage's peak memory is that of its largest training.

``--ngpu N`` (N > 1) trains with DDP, one process per GPU, never DataParallel; ``--num_nodes M``
(M > 1) spans M nodes of a Slurm job (run this command under ``srun --ntasks-per-node=1``);
see :mod:`espnet_delta.recipe.ddp`.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import signal
import time
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.cli import LOG_FORMAT, add_bool_argument, add_log_level_argument, new_parser, setup_logging
from espnet_delta.fileio import claim
from espnet_delta.recipe import ddp
from espnet_delta.recipe.names import DONE
from espnet_delta.ssl.hub import HubModelError
from espnet_delta.whisper.load import WhisperLoadError



def run_job(job: Path, ngpu: int, extra, num_nodes: int = 1) -> None:
    from espnet_delta.asr.train import train as asr_train

    config = job / "train.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found (render it before training)")
    distributed = ddp.train_args(ngpu, num_nodes, config, extra)  # refuses DataParallel before any work
    log_file = job / "train.log"
    handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    start = time.time()
    try:
        asr_train(["--config", str(config), "--output_dir", str(job), *distributed, "--resume", "true", *extra])
    finally:
        root.removeHandler(handler)
        handler.close()
    (job / DONE).write_text(f"{time.time() - start:.1f} s\n")
    logging.info("%s: finished in %.1f s (log: %s)", job, time.time() - start, log_file)


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("jobs", nargs="+", type=Path, help="job directories holding train.yaml")
    p.add_argument("--ngpu", type=int, default=0, help="GPUs per node; > 1: DDP, one process per GPU")
    p.add_argument("--num_nodes", type=int, default=1, help="nodes per training (> 1: under srun in a Slurm job)")
    add_bool_argument(p, "--fork_per_job", default=True,
                      help="train each job in a forked child (memory freed after each job); false: all in this process")
    add_log_level_argument(p)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="more asr_train options for every job (the rest of the command line)")
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    missing = [str(job / "train.yaml") for job in args.jobs if not (job / DONE).is_file() and not (job / "train.yaml").is_file()]
    if missing:  # before any training: a stage fails at once, not after hours
        logging.error("no training config (render it before training): %s", ", ".join(missing))
        raise SystemExit(1)
    for job in args.jobs:
        if (job / DONE).is_file():
            logging.info("%s: already trained (%s), skipping", job, job / DONE)
            continue
        if not claim(str(job)):
            logging.info("%s: taken by another process of this stage", job)
            continue
        logging.info("%s: training", job)
        if args.fork_per_job:
            run_forked(job, args.ngpu, args.extra, args.num_nodes)
        else:
            _run_or_exit(job, args.ngpu, args.extra, args.num_nodes)


def _run_or_exit(job: Path, ngpu: int, extra, num_nodes: int) -> None:
    try:
        run_job(job, ngpu, extra, num_nodes)
    except (ddp.DistributedConfigError, HubModelError, WhisperLoadError) as e:  # wrong --ngpu, a model not found: one line
        logging.error("%s: %s", job, e)
        raise SystemExit(1)


def run_forked(job: Path, ngpu: int, extra, num_nodes: int) -> None:
    """:func:`run_job` in a forked child; ESPnet is imported here first so each child inherits it."""
    from espnet_delta.asr.train import import_task

    import_task()  # the plugin registered, then the ~13 s import of ESPnet's ASR task, paid once

    child = multiprocessing.get_context("fork").Process(
        target=_run_or_exit, args=(job, ngpu, extra, num_nodes), name=f"train {job}"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        logging.error("%s: training failed (%s); see %s", job, exit_reason(child.exitcode), job / "train.log")
        raise SystemExit(1)


def exit_reason(code: int) -> str:
    """A child's exit code in words: a negative one is the signal that ended it (SIGKILL is what the
    kernel's out-of-memory killer sends: a full-size model beside other jobs on a small machine)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ": out of memory? (dmesg names the OOM killer; train fewer jobs at once or lower the batch)" \
            if -code == signal.SIGKILL else ""
        return f"exit status {code}, killed by {name}{hint}"
    return f"exit status {code}"


if __name__ == "__main__":
    main()
