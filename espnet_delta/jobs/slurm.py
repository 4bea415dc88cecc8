"""The Slurm back-end: one array job per stage call, one array task per job group.

Built on the Slurm commands themselves (``sbatch``, ``squeue``, ``scontrol``,
``scancel``), which every cluster has, rather than a library: the tasks are shell
command lines of the stage engine, so a generated batch script is all that is needed,
and the logs are Slurm's own ``--output`` files under ``exp/``.

* Task ``k`` runs group ``k`` (the same processes as the local back-end) and writes
  ``<log_dir>/<name>.<k>.log`` and, when its command returns, ``<name>.<k>.rc``.
* The submitter polls ``squeue`` (1 s, growing to ``poll_max``) until no task is left,
  then reads each task's status file; a task without one was cancelled or killed, and
  its state comes from ``scontrol`` (accounting, i.e. ``sacct``, is not required).
* Failed tasks are reported by Slurm id (``<jobid>_<k>``) with their log path. Ctrl-C
  cancels the array. Nothing is skipped here: the stages are idempotent, so a rerun
  redoes only the unfinished work.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from espnet_delta.jobs.groups import JobArray, JobsFailed
from espnet_delta.jobs.slurm_conf import SlurmConf

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
echo "${{rc}}" > {status}
echo "# ended at $(date) with exit status ${{rc}}"
exit "${{rc}}"
"""


def task_states(job_id: str) -> Dict[int, str]:
    """Array task -> ``STATE exit=X:Y`` from ``scontrol`` (kept for MinJobAge after the end)."""
    proc = _run(["scontrol", "-o", "show", "job", job_id], check=False)
    states = {}
    for line in proc.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        task = fields.get("ArrayTaskId", "")
        if task.isdigit():
            states[int(task)] = f"{fields.get('JobState', '?')} exit={fields.get('ExitCode', '?')}"
    return states


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
        for task in jobs.task_ids():
            jobs.status_file(task).unlink(missing_ok=True)
        script = jobs.log_dir / f"{jobs.name}.sh"
        script.write_text(batch_script(jobs, os.getcwd()), encoding="utf-8")
        argv = self.submit_command(jobs, script)
        proc = _run(argv, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        job_id = proc.stdout.strip().split(";")[0]
        logger.info("submitted %s as Slurm array job %s (%d tasks); logs: %s",
                    jobs.name, job_id, len(jobs.groups), jobs.log_dir / f"{jobs.name}.<task>.log")
        try:
            self._wait(job_id)
        except BaseException:
            logger.warning("cancelling Slurm job %s", job_id)
            _run(["scancel", job_id], check=False)
            raise
        self._report(jobs, job_id)

    def _wait(self, job_id: str) -> None:
        delay, errors = 1.0, 0
        while True:
            proc = _run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], check=False)
            if proc.returncode == 0:
                errors = 0
                if not proc.stdout.strip():
                    return
            elif "Invalid job id" in proc.stderr:  # already purged from the controller
                return
            else:
                errors += 1
                if errors > 20:
                    raise RuntimeError(f"squeue keeps failing for job {job_id}: {proc.stderr.strip()}")
                logger.warning("squeue failed (%s); retrying", proc.stderr.strip())
            time.sleep(delay)
            delay = min(self.poll_max, delay * 1.5)

    def _report(self, jobs: JobArray, job_id: str) -> None:
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
                why = f"no exit status (Slurm: {states.get(task, 'state unknown')}; cancelled, killed or out of time?)"
            failures.append(f"task {job_id}_{task} {jobs.describe(task)}: {why}; log: {jobs.log(task)}")
            logger.error("Slurm task %s_%d failed: %s; log: %s", job_id, task, why, jobs.log(task))
        if failures:
            raise JobsFailed(jobs.name, failures)
        logger.info("Slurm array job %s: all %d tasks finished", job_id, len(jobs.groups))
