"""What a back-end runs: a command, the items split into groups, the log files.

Grouping is shared by the back-ends so that the local and Slurm runs of a stage
start the same processes with the same arguments (and give identical outputs).
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import List, Optional, Sequence


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
        return f"{self.name}.{task} ({shlex.join(self.groups[task - 1])})"


class JobsFailed(RuntimeError):
    """Some tasks failed; the message names each one with its id and log file."""

    def __init__(self, name: str, failures: List[str]):
        self.failures = failures
        super().__init__(f"{len(failures)} task(s) of {name} failed:\n  " + "\n  ".join(failures))
