"""What a back-end runs: a command, the items split into groups, the log files.

Grouping is shared by the back-ends so that the local and Slurm runs of a stage
start the same processes with the same arguments (and give identical outputs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Sequence


def split_round_robin(items: Sequence[str], groups: int) -> List[List[str]]:
    """Items ``i, i + n, i + 2n, ...`` form group ``i`` (``n = min(groups, len(items))``).

    Round-robin, not contiguous blocks: the stages list their largest jobs first, so
    the groups get similar loads.
    """
    if groups < 1:
        raise ValueError(f"the number of groups must be >= 1, got {groups}")
    n = min(groups, len(items))
    return [list(items[g::n]) for g in range(n)]


@dataclasses.dataclass
class JobArray:
    """``command + group`` for every group; task ``k`` (1-based) runs ``groups[k - 1]``."""

    name: str
    command: List[str]
    groups: List[List[str]]
    log_dir: Path
    gpus: int = 0  # GPUs per task
    num_threads: Optional[int] = None  # OMP_NUM_THREADS per task (None: the back-end's default)
    max_running: Optional[int] = None  # at most this many tasks at once (None: all)
    claim_dir: Optional[Path] = None  # set: the tasks share their items through claims (espnet_delta.fileio.claim)

    def task_ids(self) -> List[int]:
        return list(range(1, len(self.groups) + 1))

    def argv(self, task: int) -> List[str]:
        return [*self.command, *self.groups[task - 1]]

    def log(self, task: int) -> Path:
        return self.log_dir / f"{self.name}.{task}.log"

    def status_file(self, task: int) -> Path:
        """Holds the task's exit status once its command has returned."""
        return self.log_dir / f"{self.name}.{task}.rc"

    def describe(self, task: int) -> str:
        shared = "the next unclaimed of " if self.claim_dir is not None else ""
        return f"{self.name}.{task} ({shared}{shlex.join(self.groups[task - 1])})"


class JobsFailed(RuntimeError):
    """Some tasks failed; the message names each one with its id and log file."""

    def __init__(self, name: str, failures: List[str]):
        self.failures = failures
        super().__init__(f"{len(failures)} task(s) of {name} failed:\n  " + "\n  ".join(failures))


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a back-end (Ctrl-C, ``kill``, Slurm's scancel of the stage):
    raised where it waits, so that it stops its jobs before it exits with 128 + the signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


_deferral = {"depth": 0, "pending": None}  # deferred_interrupts() blocks; a signal that came meanwhile


def _raise_interrupted(signum, frame) -> None:
    hold_interrupts()  # a second signal (Ctrl-C reaches the engine, which forwards SIGTERM) must not cut the stop short
    if _deferral["depth"]:
        _deferral["pending"] = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """An interrupt that arrives inside the block is raised when it ends: e.g. between starting a
    task and recording it, where raising would leave the new task unknown and running."""
    _deferral["depth"] += 1
    try:
        yield
    finally:
        _deferral["depth"] -= 1
    if not _deferral["depth"] and _deferral["pending"] is not None:
        signum, _deferral["pending"] = _deferral["pending"], None
        raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block. Installed explicitly
    because the stage engine starts the back-end in the background (so that it can forward
    a signal at once), where a shell sets SIGINT to ignored; and Python's default SIGTERM
    would end the back-end without stopping its jobs. Only the main thread gets signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_interrupted) for s in INTERRUPTS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        _deferral["pending"] = None


def hold_interrupts() -> None:
    """Ignore further SIGINT/SIGTERM while a back-end stops its jobs (it does so within a bounded
    time), so a second Ctrl-C cannot leave them running; :func:`interruptible` restores them."""
    if threading.current_thread() is threading.main_thread():
        for s in INTERRUPTS:
            signal.signal(s, signal.SIG_IGN)


def group_members(pgid: int) -> List[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc (Linux); elsewhere
    ``[pgid]`` while ``killpg(pgid, 0)`` succeeds."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            members.append(int(entry.name))
    return members
