"""Run a stage's jobs on the back-end named by cmd.sh; called by ``run_parallel`` (local/utils.sh).

    python -m espnet_delta.jobs local [--gpu N] --nj 2 --name extract --log_dir exp/logs \\
        --item 1 --item 2 -- python -m espnet_delta.bin.extract_features ... --shard
    python -m espnet_delta.jobs slurm --config conf/slurm.conf --gpu 1 --mem 8G ... -- command ...

The items are split round-robin into ``--nj`` groups and ``command + group`` runs once
per group (locally as processes, on Slurm as array tasks); ``--single`` runs it once
with no items (``run_job`` in local/utils.sh). With ``--task_per_item`` (items that are
independent jobs, e.g. trainings) a cluster back-end gives every item its own task, at most
``--nj`` running at once (one Slurm job per training); the local back-end keeps ``--nj``
processes, because each pays the ESPnet import once, gives each the whole list, and each
process takes the next item no other has claimed (the command calls
:func:`espnet_delta.fileio.claim`), so no core idles behind a longer group. Options after the back-end name that this command does not
define (``--mem 8G``, ``--time 4:00:00``, ``--num_nodes 2``) go to conf/slurm.conf's
``option`` rules; the local back-end ignores them, so cmd.sh can switch back-ends by
changing one word. Exit status 1 when a task failed (each named with its id and log);
128 + the signal (130, 143) when SIGINT or SIGTERM stopped it: the local back-end then stops
its running tasks' process groups, the Slurm back-end cancels the array job.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_delta.cli import LOG_FORMAT
from espnet_delta.jobs.groups import Interrupted, JobArray, JobsFailed, interruptible, split_round_robin

BACKENDS = ("local", "slurm")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backend", choices=BACKENDS, help="where the jobs run (cmd.sh)")
    p.add_argument("--config", default=None, help="slurm: Kaldi/ESPnet-style slurm.conf (default: built-in)")
    p.add_argument("--gpu", type=int, default=0, help="GPUs per task")
    p.add_argument("--num_threads", type=int, default=None, help="OMP_NUM_THREADS per task (and slurm's num_threads)")
    p.add_argument("--max_jobs_run", type=int, default=None, help="at most this many tasks at once")
    p.add_argument("--poll_max", type=float, default=30.0, help="slurm: longest pause between squeue polls (s)")
    p.add_argument("--nj", type=int, required=True, help="number of groups (parallel jobs)")
    p.add_argument("--name", required=True, help="job name; logs are <log_dir>/<name>.<k>.log")
    p.add_argument("--log_dir", type=Path, required=True)
    p.add_argument("--item", action="append", default=[], help="one item (repeat); appended to the command per group")
    p.add_argument("--task_per_item", action="store_true",
                   help="cluster back-ends: one task per item, --nj at once; local: --nj processes share the items, "
                        "each claiming the next (the command calls espnet_delta.fileio.claim)")
    p.add_argument("--single", action="store_true", help="run the command once, with no items (one task)")
    return p


def parse_extra(words: List[str]) -> Dict[str, str]:
    """``--key value`` / ``--key=value`` pairs not defined by the parser (slurm.conf options)."""
    extra: Dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise SystemExit(f"espnet_delta.jobs: unexpected argument {word!r} (options are --key value)")
        if "=" in word:
            key, value = word[2:].split("=", 1)
            i += 1
        elif i + 1 < len(words):
            key, value = word[2:], words[i + 1]
            i += 2
        else:
            raise SystemExit(f"espnet_delta.jobs: option {word} needs a value")
        extra[key] = value
    return extra


def main(cmd: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if cmd is None else cmd)
    if "--" not in argv:
        raise SystemExit("espnet_delta.jobs: give the command after '--'")
    cut = argv.index("--")
    head, command = argv[:cut], argv[cut + 1:]
    if not command:
        raise SystemExit("espnet_delta.jobs: the command after '--' is empty")
    args, rest = get_parser().parse_known_args(head)
    extra = parse_extra(rest)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if args.single and args.item:
        raise SystemExit("espnet_delta.jobs: --single runs the command without items; got --item too")
    if not args.item and not args.single:
        logging.info("%s: no items, nothing to run", args.name)
        return
    per_item = args.task_per_item and args.backend != "local"
    groups = [[]] if args.single else split_round_robin(args.item, len(args.item) if per_item else args.nj)
    claim_dir = None
    if args.task_per_item and args.backend == "local" and not args.single:
        groups = [list(args.item) for _ in groups]  # one shared list, taken item by item
        claim_dir = args.log_dir / f"{args.name}.claims"
    max_running = args.max_jobs_run or (args.nj if per_item else None)
    jobs = JobArray(args.name, command, groups, args.log_dir, gpus=args.gpu, num_threads=args.num_threads,
                    max_running=max_running, claim_dir=claim_dir)
    if args.backend == "local":
        from espnet_delta.jobs.local import LocalBackend

        if extra:
            logging.debug("local back-end ignores %s", extra)
        backend = LocalBackend()
    else:
        from espnet_delta.jobs.slurm import SlurmBackend
        from espnet_delta.jobs.slurm_conf import SlurmConf

        if args.num_threads:
            extra["num_threads"] = str(args.num_threads)
        backend = SlurmBackend(SlurmConf.load(args.config), extra, poll_max=args.poll_max)
    try:
        with interruptible():
            backend.run(jobs)
    except Interrupted as e:
        logging.error("%s: %s; its unfinished tasks are redone by a rerun", args.name, e)
        sys.exit(e.exit_status)
    except (JobsFailed, RuntimeError, ValueError) as e:
        logging.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
