"""Multi-GPU and multi-node training options for ESPnet's trainer: DDP, never DataParallel.

ESPnet 202511 trains with ``--ngpu N`` as follows (espnet2/tasks/abs_task.py,
espnet2/train/distributed_utils.py):

* ``--multiprocessing_distributed false`` (ESPnet's default) and N > 1: one process,
  ``torch.nn.DataParallel``. Refused here: DataParallel replicates the module tree on
  each GPU, but :class:`espnet_delta.ssl.upstream.FrozenUpstream` keeps the SSL model
  outside it, so every replica would run cuda:0's upstream.
* ``--multiprocessing_distributed true``: one process per GPU ("spawn"; the plugin's
  launcher re-registers the plugin in each, see :mod:`espnet_delta.launch`), DDP; each
  process builds its own model, so each rank holds its own frozen upstream on its GPU,
  still outside the state dict. Several nodes: the command runs under
  ``srun --ntasks-per-node=1`` with ``--dist_launcher slurm`` (node count and rank from
  srun) and a master port all nodes agree on (:func:`slurm_master_port`).
* External launcher (one process per rank, ``--multiprocessing_distributed false``,
  ``--dist_world_size/--dist_rank``): :func:`rank_args`; with ``--ngpu 0`` and
  ``--dist_backend gloo`` this is DDP on CPUs (used by the tests).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import yaml
from espnet2.utils.types import str2bool


class DistributedConfigError(ValueError):
    """The GPU / node options cannot give a correct distributed training."""


class DataParallelRefused(DistributedConfigError):
    pass


def _option(args: Sequence[str], name: str) -> Optional[str]:
    """The last value of ``--name value`` / ``--name=value`` in ``args``."""
    value = None
    for i, word in enumerate(args):
        if word == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
        elif word.startswith(f"--{name}="):
            value = word.split("=", 1)[1]
    return value


def check_no_data_parallel(ngpu: int, config: Optional[Path] = None, extra: Sequence[str] = ()) -> None:
    """Raise when ``ngpu > 1`` would train with DataParallel (config or extra options say so)."""
    if ngpu <= 1:
        return
    value = _option(extra, "multiprocessing_distributed")
    source = "the command line"
    if value is None and config is not None and Path(config).is_file():
        conf = yaml.safe_load(Path(config).read_text()) or {}
        if "multiprocessing_distributed" in conf:
            value, source = str(conf["multiprocessing_distributed"]), str(config)
    if value is not None and not str2bool(value):
        raise DataParallelRefused(
            f"--ngpu {ngpu} with multiprocessing_distributed false (from {source}) would train with "
            "torch DataParallel, whose replicas all share cuda:0's frozen SSL upstream (FrozenUpstream is "
            "outside the module tree); use DDP: multiprocessing_distributed true (the default here)"
        )


def slurm_master_port(base: int = 20000, span: int = 20000) -> int:
    """A port every node of one Slurm job computes alike (from ``SLURM_JOB_ID``)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        raise DistributedConfigError("--num_nodes > 1 needs a Slurm job (SLURM_JOB_ID is not set); see conf/slurm.conf")
    return base + int(job) % span


def train_args(ngpu: int, num_nodes: int = 1, config: Optional[Path] = None, extra: Sequence[str] = ()) -> List[str]:
    """asr_train options for ``ngpu`` GPUs per node on ``num_nodes`` nodes (DDP when more than one device)."""
    if ngpu < 0 or num_nodes < 1:
        raise DistributedConfigError(f"--ngpu must be >= 0 and --num_nodes >= 1, got {ngpu} and {num_nodes}")
    check_no_data_parallel(ngpu, config, extra)
    args = ["--ngpu", str(ngpu)]
    if ngpu > 1 or num_nodes > 1:
        args += ["--multiprocessing_distributed", "true"]
    if num_nodes > 1:
        if "SLURM_STEP_NUM_NODES" not in os.environ:
            raise DistributedConfigError(
                f"--num_nodes {num_nodes}: run the training under srun --ntasks-per-node=1 in a Slurm job "
                "of that many nodes (cmd.sh: slurm back-end, conf/slurm.conf 'option num_nodes=* --nodes $0')"
            )
        nodes = int(os.environ["SLURM_STEP_NUM_NODES"])
        if nodes != num_nodes:
            raise DistributedConfigError(f"--num_nodes {num_nodes} but this srun step has {nodes} nodes")
        args += ["--dist_launcher", "slurm", "--dist_master_port", str(slurm_master_port())]
        if ngpu == 0:
            args += ["--dist_backend", "gloo"]
    return args


def rank_args(rank: int, world_size: int, master_port: int, master_addr: str = "127.0.0.1",
              ngpu: int = 0) -> List[str]:
    """asr_train options of one rank started by an external launcher (gloo on CPU when ``ngpu == 0``)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in 0..{world_size - 1}")
    args = ["--ngpu", str(min(ngpu, 1)), "--multiprocessing_distributed", "false",
            "--dist_world_size", str(world_size), "--dist_rank", str(rank),
            "--dist_master_addr", master_addr, "--dist_master_port", str(master_port)]
    if ngpu > 0:
        args += ["--local_rank", str(rank)]
    else:
        args += ["--dist_backend", "gloo"]
    return args
