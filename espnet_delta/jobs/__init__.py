"""Job back-ends of the stage engine: where a stage's parallel jobs run.

``local/utils.sh:run_parallel`` hands every stage's jobs to
``python -m espnet_delta.jobs <back-end spec> ...`` (:mod:`espnet_delta.jobs.cli`); the
spec comes from the recipe's ``cmd.sh`` (ESPnet's ``train_cmd`` / ``cuda_cmd`` /
``decode_cmd`` convention):

* ``local [--gpu N]``: background processes on this machine
  (:mod:`espnet_delta.jobs.local`), with GPU pinning when the jobs need GPUs;
* ``slurm --config conf/slurm.conf [--gpu N] [--mem 8G] [--time 4:00:00] ...``: one
  Slurm array job per call, one array task per job group (:mod:`espnet_delta.jobs.slurm`),
  sbatch options from a Kaldi/ESPnet-style ``conf/slurm.conf``
  (:mod:`espnet_delta.jobs.slurm_conf`); while tasks wait, their squeue reasons are logged
  and a wait that cannot end (every node down, an impossible request) stops the stage in one
  line (:mod:`espnet_delta.jobs.slurm_pending`).

Both split the items round-robin into the same groups (:mod:`espnet_delta.jobs.groups`),
write one log per group (``<log_dir>/<name>.<k>.log``, k = 1..groups) and report failed
groups by task id and log path. Nothing is retried or skipped here: the stages are
idempotent, so rerunning a stage redoes only what is not finished.
"""
