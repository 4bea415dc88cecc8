"""Why the tasks of a Slurm array job pend, and whether waiting can start them.

Most pending reasons clear by themselves (``Resources``, ``Priority``, an account's running
limits); the back-end logs them when they change and every ``pending_log`` seconds. Some
never clear by waiting, and a stage that waits on them waits forever (issue 24: a node left
DOWN after its slurmd died, the next stage's array PENDING without a word):

* the request does not fit the cluster: :data:`REQUEST_ERRORS`, per-job maxima or minima of
  an association or QOS (``AssocMaxCpuPerJobLimit``, ``QOSMaxGRESPerJob``, ``QOSMin...``):
  stop at once;
* only an administrator can clear it: :data:`ADMIN_REASONS`, or every node of the job's
  partition is down, drained, draining, failing or not responding (``sinfo``), whatever the reason says (it
  may still read ``Resources``): stop when that has lasted ``stuck_after`` seconds, so a
  node that is rebooting or re-registering does not stop a stage.

The reason names are Slurm's job reason codes (squeue(1) "JOB REASON CODES",
https://slurm.schedmd.com/job_reason_codes.html); Slurm 22.05 prints the down-or-drained
case as the text "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher
priority partitions", which the node check covers.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from typing import Dict, Iterable, List, Optional, Tuple

logger = logging.getLogger(__name__)

#: reason -> why it never clears: the request itself has to change (conf/slurm.conf, cmd.sh)
REQUEST_ERRORS = {
    "AccountNotAllowed": "the account may not use this partition",
    "BadConstraints": "no node has the requested features",
    "DependencyNeverSatisfied": "it depends on a job that can no longer succeed",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "PartitionConfig": "the request does not fit the partition (more CPUs, memory or GPUs than its nodes have)",
    "PartitionTimeLimit": "the time limit is longer than the partition allows",
    "QOSNotAllowed": "the QOS may not use this partition",
}
#: per-job maxima (AssocMaxCpuPerJobLimit, QOSMaxGRESPerJob, ...) and QOS minima: also requests that never fit
PER_JOB_LIMIT = re.compile(r"^(Assoc|QOS)Max\w*PerJob|^QOSMin")
#: reason -> why only an administrator clears it (stop after ``stuck_after``)
ADMIN_REASONS = {
    "FrontEndDown": "no front end node is up",
    "JobHeldAdmin": "an administrator (or a failed launch) holds the job",
    "PartitionDown": "the partition is DOWN",
    "PartitionInactive": "the partition is INACTIVE",
    "PartitionNodeLimit": "the job needs more nodes than the partition has up (or allows)",
}
#: sinfo node states (long form, without the flag suffixes * ~ # ! % $ @ ^ - +) that take no new job
UNUSABLE = {"down", "drain", "drained", "draining", "fail", "failing", "inval", "future"}


def classify(reason: str) -> Tuple[Optional[str], str]:
    """``("request" | "admin" | None, why)`` for a squeue reason."""
    if reason in REQUEST_ERRORS:
        return "request", REQUEST_ERRORS[reason]
    if PER_JOB_LIMIT.match(reason):
        return "request", "the request exceeds a per-job limit (or is below a minimum) of the account or QOS"
    if reason in ADMIN_REASONS:
        return "admin", ADMIN_REASONS[reason]
    return None, ""


def unusable(state: str) -> bool:
    """Whether a node in this sinfo state (``%T``) takes no new job: one of :data:`UNUSABLE`, or
    not responding (``*``: ``idle*``, ``completing*``; a slurmd that died, before SlurmdTimeout
    makes the node DOWN)."""
    return state.endswith("*") or state.rstrip("*~#!%$@^-+").lower() in UNUSABLE


def ranges(ids: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3,5"`` (Slurm's array notation)."""
    out: List[str] = []
    for i in sorted(set(ids)):
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def partition_nodes(partitions: str) -> Optional[List[Tuple[str, str, str]]]:
    """``(node, state, reason)`` of every node of the partitions (comma-separated); None if sinfo fails."""
    proc = subprocess.run(["sinfo", "-h", "-N", "-p", partitions, "-o", "%N|%T|%E"], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        logger.debug("sinfo failed: %s", proc.stderr.strip())
        return None
    nodes = {}
    for line in proc.stdout.splitlines():
        name, state, reason = (line.split("|", 2) + ["", ""])[:3]
        nodes[name] = (name, state, reason)
    return sorted(nodes.values())


class PendingWatch:
    """Follows the pending tasks of one array job across polls: logs their reasons, and
    :meth:`update` says when they cannot start by waiting."""

    def __init__(self, job_id: str, name: str, stuck_after: float, pending_log: float,
                 clock=time.monotonic):
        self.job_id, self.name = job_id, name
        self.stuck_after, self.pending_log = stuck_after, pending_log
        self.clock = clock
        self.logged_reasons: Optional[frozenset] = None
        self.logged_at = clock()  # the first line when a reason shows (not for 'None', the scheduler not yet run)
        self.blocked_since: Optional[float] = None

    def update(self, tasks: Dict[int, Tuple[str, str, str]]) -> Optional[Tuple[str, str]]:
        """``tasks``: array task -> (state, partition, reason) from squeue. Returns None, or
        (why they cannot start, what to do and how to inspect it) when the stage should stop."""
        now = self.clock()
        pending = {t: (part, reason) for t, (state, part, reason) in tasks.items() if state == "PENDING"}
        if not pending:
            self.blocked_since = None
            return None
        by_reason: Dict[str, List[int]] = {}
        for task, (_, reason) in pending.items():
            by_reason.setdefault(reason, []).append(task)
        reasons = frozenset(by_reason)
        if (reasons != self.logged_reasons and reasons != {"None"}) or now - self.logged_at >= self.pending_log:
            others = len(tasks) - len(pending)
            groups = [f"{self.job_id}_[{ranges(ids)}] ({reason})" for reason, ids in sorted(by_reason.items())]
            logger.info("Slurm job %s (%s): %s%d pending: %s", self.job_id, self.name,
                        f"{others} running, " if others else "", len(pending), "; ".join(groups))
            self.logged_reasons, self.logged_at = reasons, now
        if reasons == {"None"}:  # the scheduler has not looked at them yet
            return None
        ids = f"{self.job_id}_[{ranges(pending)}]"
        for reason in sorted(by_reason):
            kind, why = classify(reason)
            if kind == "request":
                part = ",".join(sorted({part for part, _ in pending.values()}))
                return (f"{ids} cannot start: squeue reason {reason}: {why}",
                        f"change the request (cmd.sh, conf/slurm.conf); inspect with 'scontrol show job {self.job_id}' "
                        f"and 'scontrol show partition {part}'")
        blocked = None
        for reason in sorted(by_reason):
            kind, why = classify(reason)
            if kind == "admin":
                blocked = f"squeue reason {reason}: {why}"
        if blocked is None:
            partitions = ",".join(sorted({part for part, _ in pending.values()}))
            nodes = partition_nodes(partitions)
            if nodes is not None and all(unusable(state) for _, state, _ in nodes):
                shown = ", ".join(f"{n} {s}" + (f" ({r})" if r and r != "none" else "") for n, s, r in nodes[:3])
                more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
                blocked = (f"squeue reason '{'; '.join(sorted(by_reason))}', every node of partition {partitions} "
                           f"is down or drained ({shown or 'no nodes'}{more})")
        if blocked is None:
            self.blocked_since = None
            return None
        if self.blocked_since is None:
            self.blocked_since = now
        if now - self.blocked_since < self.stuck_after:
            return None
        return (f"{ids} cannot start by waiting: {blocked} for {now - self.blocked_since:.0f} s",
                f"rerun when the nodes are back; inspect with 'scontrol show job {self.job_id}' and 'sinfo -R'")
