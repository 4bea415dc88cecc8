"""The local back-end: the groups run as background processes on this machine.

With a claim dir (``--task_per_item``) the tasks share one list of items and each takes the next
unclaimed one (:func:`espnet_delta.fileio.claim`) instead of a fixed group.

Each process gets ``OMP_NUM_THREADS=1`` unless told otherwise (small models train as
fast on one thread as on two, so N processes give ~N x throughput) and writes its
output to ``<log_dir>/<name>.<k>.log``. Jobs that need GPUs (``--gpu N``) are pinned:
each running task gets ``CUDA_VISIBLE_DEVICES`` set to N GPUs of its own, so never
more tasks run than the visible GPUs can hold; the rest wait for a free slot.

Each task runs in a process group of its own. When the back-end is interrupted (SIGINT,
SIGTERM: :class:`~espnet_delta.jobs.groups.Interrupted`, or any error while waiting) it
sends SIGTERM to every running task's group (the task and whatever it started: forked
trainings, data loader workers), waits for them (SIGKILL after ``stop_seconds``), marks
each log as interrupted and writes no status file, so a rerun redoes exactly those tasks.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, List, Optional

from espnet_delta.fileio import CLAIM_DIR_ENV
from espnet_delta.jobs.groups import (Interrupted, JobArray, JobsFailed, deferred_interrupts, group_members,
                                      hold_interrupts)

logger = logging.getLogger(__name__)


def visible_gpus() -> List[str]:
    """The GPU ids processes here may use: ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def gpu_slots(gpus_per_task: int, gpus: List[str]) -> List[Optional[str]]:
    """``CUDA_VISIBLE_DEVICES`` of each concurrent slot: one slot per ``gpus_per_task`` GPUs (none for CPU jobs)."""
    if gpus_per_task <= 0:
        return []
    if len(gpus) < gpus_per_task:
        raise RuntimeError(
            f"the jobs need {gpus_per_task} GPU(s) each, but {len(gpus)} are visible "
            f"(CUDA_VISIBLE_DEVICES / nvidia-smi -L); run them with --gpu 0 (e.g. --gpu_inference false) on a CPU machine"
        )
    n = len(gpus) // gpus_per_task
    return [",".join(gpus[s * gpus_per_task:(s + 1) * gpus_per_task]) for s in range(n)]


class LocalBackend:
    """Runs a :class:`JobArray` here and waits for it."""

    def __init__(self, poll_seconds: float = 0.2, stop_seconds: float = 30.0):
        self.poll_seconds = poll_seconds
        self.stop_seconds = stop_seconds  # SIGTERM -> SIGKILL grace of an interrupted task's group

    def _start(self, jobs: JobArray, task: int, cuda: Optional[str]) -> subprocess.Popen:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(jobs.num_threads or 1)
        env.pop(CLAIM_DIR_ENV, None)  # never an enclosing run's claims
        if jobs.claim_dir is not None:
            env[CLAIM_DIR_ENV] = str(jobs.claim_dir)
        if cuda is not None:
            env["CUDA_VISIBLE_DEVICES"] = cuda
        argv = jobs.argv(task)
        log = jobs.log(task)
        jobs.status_file(task).unlink(missing_ok=True)  # an earlier run's: written again only when the task returns
        with log.open("w", encoding="utf-8") as f:
            f.write(f"# {shlex.join(argv)}\n# started at {time.ctime()} on {socket.gethostname()}"
                    + (f", CUDA_VISIBLE_DEVICES={cuda}" if cuda is not None else "") + "\n")
            f.flush()
            return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    process_group=0)  # its own group: stopped as a whole (stop)

    def run(self, jobs: JobArray) -> None:
        """Run every task; raise :class:`JobsFailed` naming the failed ones after all have ended."""
        jobs.log_dir.mkdir(parents=True, exist_ok=True)
        if jobs.claim_dir is not None:  # afresh: an earlier run's claims must not hold back this one
            shutil.rmtree(jobs.claim_dir, ignore_errors=True)
            jobs.claim_dir.mkdir(parents=True)
        slots = gpu_slots(jobs.gpus, visible_gpus()) if jobs.gpus > 0 else []
        limit = len(slots) if slots else len(jobs.groups)
        if jobs.max_running:
            limit = min(limit, jobs.max_running)
        pending = jobs.task_ids()
        running: Dict[int, tuple] = {}  # task -> (process, slot)
        free = list(range(limit))
        failures: List[str] = []
        try:
            while pending or running:
                while pending and free:
                    with deferred_interrupts():  # a started task is always in `running`, so stop() reaches it
                        task, slot = pending.pop(0), free.pop(0)
                        running[task] = (self._start(jobs, task, slots[slot] if slots else None), slot)
                    logger.info("started %s: log %s", jobs.describe(task), jobs.log(task))
                time.sleep(self.poll_seconds)
                for task, (proc, slot) in list(running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    del running[task]
                    free.append(slot)
                    self._finish(jobs, task, rc, failures)
        except BaseException as e:
            self.stop(jobs, {task: proc for task, (proc, _) in running.items()}, e)
            raise
        if failures:
            raise JobsFailed(jobs.name, failures)

    def stop(self, jobs: JobArray, running: Dict[int, subprocess.Popen], why: BaseException) -> None:
        """SIGTERM to each running task's process group; wait until every group is empty
        (SIGKILL after ``stop_seconds``). Each log ends with an "interrupted" line."""
        hold_interrupts()
        what = str(why) if isinstance(why, Interrupted) else f"stopped ({type(why).__name__})"
        for proc in running.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.time() + self.stop_seconds
        killed = set()
        while True:
            for proc in running.values():
                proc.poll()  # reap the task itself
            alive = {task: group_members(proc.pid) for task, proc in running.items()}
            alive = {task: pids for task, pids in alive.items() if pids}
            if not alive:
                break
            if time.time() > deadline:
                for task in alive:
                    if task not in killed:
                        _signal_group(running[task].pid, signal.SIGKILL)
                        killed.add(task)
                if time.time() > deadline + 10:
                    logger.error("processes %s did not end after SIGKILL", sorted(sum(alive.values(), [])))
                    break
            time.sleep(0.05)
        for task in running:
            with jobs.log(task).open("a", encoding="utf-8") as f:
                f.write(f"# {what} at {time.ctime()}: process group sent SIGTERM"
                        + (", then SIGKILL" if task in killed else "") + "; no exit status: a rerun redoes it\n")
        if running:
            logger.warning("%s: %s; stopped %d running task(s): %s", jobs.name, what, len(running),
                           ", ".join(jobs.describe(task) for task in running))

    @staticmethod
    def _finish(jobs: JobArray, task: int, rc: int, failures: List[str]) -> None:
        jobs.status_file(task).write_text(f"{rc}\n")
        with jobs.log(task).open("a", encoding="utf-8") as f:
            f.write(f"# ended at {time.ctime()} with exit status {rc}\n")
        if rc == 0:
            logger.info("finished %s", jobs.describe(task))
            return
        failures.append(f"task {task} {jobs.describe(task)}: exit status {rc}; log: {jobs.log(task)}")
        tail = jobs.log(task).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        logger.error("%s failed (exit status %d); last lines of %s:\n%s",
                     jobs.describe(task), rc, jobs.log(task), "\n".join(tail))


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
