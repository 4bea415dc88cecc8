"""The Slurm back-end: one array job per stage call, one array task per job group.

Built on the Slurm commands themselves (``sbatch``, ``squeue``, ``scontrol``,
``scancel``), which every cluster has, rather than a library: the tasks are shell
command lines of the stage engine, so a generated batch script is all that is needed,
and the logs are Slurm's own ``--output`` files under ``exp/``.

* Task ``k`` runs group ``k`` (the same processes as the local back-end) and writes
  ``<log_dir>/<name>.<k>.log`` and, when its command returns, ``<name>.<k>.rc``.
* The submitter polls ``squeue`` (1 s, growing to ``poll_max``) until every task has left
  it or written its status file (a task whose node dies after that stays COMPLETING until
  Slurm marks the node DOWN), then reads each task's status file; a task without one was
  cancelled or killed, and its state comes from ``scontrol`` (accounting, i.e. ``sacct``,
  is not required).
* While tasks pend, their squeue reasons are logged (when they change, and every
  ``pending_log`` seconds); tasks that cannot start by waiting (a request that does not fit,
  every node of the partition down or drained: :mod:`espnet_delta.jobs.slurm_pending`) are
  cancelled with one line naming the job, the reason and how to inspect it. A job that
  sbatch refuses is one line too.
* Failed tasks are reported by Slurm id (``<jobid>_<k>``) with their log path, also tasks
  lost with their node (no status file; Slurm's state says NODE_FAIL, or that the task was
  requeued) and tasks cancelled while pending. Ctrl-C cancels the array. Nothing is skipped
  here: the stages are idempotent, so a rerun redoes only the unfinished work.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from espnet_delta.jobs.groups import JobArray, JobsFailed
from espnet_delta.jobs.slurm_conf import SlurmConf
from espnet_delta.jobs.slurm_pending import PendingWatch

logger = logging.getLogger(__name__)


def _run(argv: List[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)


def batch_script(jobs: JobArray, cwd: str) -> str:
    """The array job's script: ``case`` on ``SLURM_ARRAY_TASK_ID``, then the status file."""
    threads = str(jobs.num_threads) if jobs.num_threads else "${SLURM_CPUS_PER_TASK:-1}"
    cases = "\n".join(f"    {k}) set -- {shlex.join(jobs.argv(k))} ;;" for k in jobs.task_ids())
    status = shlex.quote(str(jobs.log_dir / jobs.name)) + '."${task}".rc'
    return f"""#!/usr/bin/env bash
# {jobs.name}: {len(jobs.groups)} array tasks, written by espnet_delta.jobs (slurm back-end)
cd {shlex.quote(cwd)} || exit 1
export OMP_NUM_THREADS={threads}
task=${{SLURM_ARRAY_TASK_ID:?not started as an array task}}
case "${{task}}" in
{cases}
    *) echo "no task ${{task}} in this array" >&2; exit 2 ;;
esac
printf "# "; printf "%q " "$@"; echo
echo "# started at $(date) on $(hostname), job ${{SLURM_ARRAY_JOB_ID}}_${{task}}, CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}"
"$@"
rc=$?
# atomic: the submitter may read it at once
echo "${{rc}}" > {status}.tmp && mv -f {status}.tmp {status}
echo "# ended at $(date) with exit status ${{rc}}"
exit "${{rc}}"
"""


def task_states(job_id: str) -> Dict[int, str]:
    """Array task -> ``STATE exit=X:Y`` (+ restarts) from ``scontrol`` (kept for MinJobAge after the end)."""
    proc = _run(["scontrol", "-o", "show", "job", job_id], check=False)
    states = {}
    for line in proc.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        task = fields.get("ArrayTaskId", "")
        if task.isdigit():
            state = f"{fields.get('JobState', '?')} exit={fields.get('ExitCode', '?')}"
            if fields.get("Restarts", "0") not in ("0", ""):
                state += f", requeued {fields['Restarts']}x"
            states[int(task)] = state
    return states


def squeue_tasks(job_id: str) -> Tuple[Optional[Dict[int, Tuple[str, str, str]]], str]:
    """Array task -> (state, partition, reason) of the job's tasks still known to squeue
    (``{}``: none left), or ``(None, error)`` when squeue fails."""
    proc = _run(["squeue", "-h", "-r", "-j", job_id, "-o", "%K|%T|%P|%r"], check=False)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:  # already purged from the controller
            return {}, ""
        return None, proc.stderr.strip()
    tasks = {}
    for line in proc.stdout.splitlines():
        task, state, partition, reason = (line.split("|", 3) + ["", "", ""])[:4]
        tasks[int(task) if task.isdigit() else 0] = (state, partition, reason)
    return tasks, ""


class JobStuck(RuntimeError):
    """No task of the array job can start by waiting; the job was cancelled. One line."""


class SlurmBackend:
    """Submits a :class:`JobArray` with sbatch and waits for it."""

    def __init__(self, conf: SlurmConf, options: Dict[str, str], poll_max: float = 30.0):
        self.conf = conf
        self.options = options
        self.poll_max = poll_max

    def submit_command(self, jobs: JobArray, script: Path) -> List[str]:
        array = f"1-{len(jobs.groups)}" + (f"%{jobs.max_running}" if jobs.max_running else "")
        values = dict(self.options)
        if jobs.gpus:
            values["gpu"] = str(jobs.gpus)
        return [
            *self.conf.command, *self.conf.sbatch_options(values), "--parsable", "--job-name", jobs.name,
            "--array", array, "--output", str(jobs.log_dir / f"{jobs.name}.%a.log"), str(script),
        ]

    def run(self, jobs: JobArray) -> None:
        jobs.log_dir = jobs.log_dir.absolute()
        jobs.log_dir.mkdir(parents=True, exist_ok=True)
        wait = self.conf.wait_options(self.options)
        for task in jobs.task_ids():
            jobs.status_file(task).unlink(missing_ok=True)
        script = jobs.log_dir / f"{jobs.name}.sh"
        script.write_text(batch_script(jobs, os.getcwd()), encoding="utf-8")
        argv = self.submit_command(jobs, script)
        proc = _run(argv, check=False)
        if proc.returncode != 0:
            said = "; ".join(line.strip() for line in proc.stderr.splitlines() if line.strip()) or "no message"
            raise RuntimeError(f"sbatch refused {jobs.name} (exit {proc.returncode}): {said}; check the partition, "
                               f"account, QOS and resources that cmd.sh and its slurm.conf ask for ('sinfo -s' lists "
                               f"the partitions); command: {shlex.join(argv)}")
        job_id = proc.stdout.strip().split(";")[0]
        logger.info("submitted %s as Slurm array job %s (%d tasks); logs: %s",
                    jobs.name, job_id, len(jobs.groups), jobs.log_dir / f"{jobs.name}.<task>.log")
        watch = PendingWatch(job_id, jobs.name, wait["stuck_after"], wait["pending_log"])
        try:
            cancelled = self._wait(jobs, job_id, watch)
        except JobStuck:
            raise  # cancelled already
        except BaseException:
            logger.warning("cancelling Slurm job %s", job_id)
            _run(["scancel", job_id], check=False)
            raise
        self._report(jobs, job_id, cancelled)

    def _wait(self, jobs: JobArray, job_id: str, watch: PendingWatch) -> Dict[int, str]:
        """Until no task is left; returns the tasks cancelled while pending (task -> why)."""
        delay, errors = 1.0, 0
        cancelled: Dict[int, str] = {}
        dropped: set = set()
        while True:
            tasks, error = squeue_tasks(job_id)
            if tasks is None:
                errors += 1
                if errors > 20:
                    raise RuntimeError(f"squeue keeps failing for job {job_id}: {error}")
                logger.warning("squeue failed (%s); retrying", error)
            else:
                errors = 0
                if not tasks:
                    return cancelled
                # a task that wrote its status is done, also when Slurm requeued it after (its node failed)
                done = {t for t in tasks if jobs.status_file(t).exists()}
                requeued = [t for t in sorted(done - dropped) if tasks[t][0] == "PENDING"]
                if requeued:
                    ids = [f"{job_id}_{t}" for t in requeued]
                    logger.info("Slurm requeued %s after it finished: cancelling the requeued copy", ", ".join(ids))
                    _run(["scancel", *ids], check=False)
                    dropped.update(requeued)
                tasks = {t: v for t, v in tasks.items() if t not in done}
                if not tasks:  # every task left has its status: COMPLETING on a lost node must not hold the stage
                    return cancelled
                stuck = None if cancelled else watch.update(tasks)
                if stuck:
                    pending = [t for t, (state, _, _) in tasks.items() if state == "PENDING"]
                    ran = len(pending) < len(tasks) or any(jobs.status_file(t).exists() for t in jobs.task_ids())
                    what = "them" if ran else "the job"
                    line = f"Slurm job {job_id} ({jobs.name}): {stuck[0]}; cancelled {what}; {stuck[1]}"
                    if not ran:  # nothing started: the one line says it all
                        _run(["scancel", job_id], check=False)
                        raise JobStuck(line)
                    logger.error("%s", line)  # the tasks that run may still finish; the rest are reported failed
                    _run(["scancel", *(f"{job_id}_{t}" for t in pending)], check=False)
                    cancelled = {t: f"cancelled while pending ({tasks[t][2]})" for t in pending}
            time.sleep(delay)
            delay = min(self.poll_max, delay * 1.5)

    def _report(self, jobs: JobArray, job_id: str, cancelled: Optional[Dict[int, str]] = None) -> None:
        failures: List[str] = []
        states: Optional[Dict[int, str]] = None
        for task in jobs.task_ids():
            status = jobs.status_file(task)
            if status.is_file() and status.read_text().strip() == "0":
                continue
            if status.is_file():
                why = f"exit status {status.read_text().strip()}"
            else:
                states = task_states(job_id) if states is None else states
                state = states.get(task, "state unknown")
                if task in (cancelled or {}) and "requeued" not in state:
                    why = f"never started: {cancelled[task]}"
                else:
                    lost = ("its node failed or it was requeued" if state.startswith("NODE_FAIL") or "requeued" in state
                            else "cancelled, killed, out of time or its node lost?")
                    why = f"no exit status (Slurm: {state}; {lost})"
            failures.append(f"task {job_id}_{task} {jobs.describe(task)}: {why}; log: {jobs.log(task)}")
            logger.error("Slurm task %s_%d failed: %s; log: %s", job_id, task, why, jobs.log(task))
        if failures:
            raise JobsFailed(jobs.name, failures)
        logger.info("Slurm array job %s: all %d tasks finished", job_id, len(jobs.groups))
