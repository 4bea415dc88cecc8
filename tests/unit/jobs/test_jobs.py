"""Job back-ends without a cluster: grouping, slurm.conf rules, the local back-end through run_parallel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from espnet_delta.jobs.groups import split_round_robin
from espnet_delta.jobs.local import gpu_slots
from espnet_delta.jobs.slurm_conf import SlurmConf, SlurmConfError

REPO = Path(__file__).resolve().parents[3]


def run_parallel(cwd: Path, args: str, env=None) -> subprocess.CompletedProcess:
    """``run_parallel <args>`` of local/utils.sh in bash, as the stage engine calls it."""
    script = f'set -euo pipefail; . "{REPO}/local/utils.sh"; python="{sys.executable}"; run_parallel {args}'
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_round_robin_groups():
    assert split_round_robin(list("abcde"), 2) == [["a", "c", "e"], ["b", "d"]]
    assert split_round_robin(list("abc"), 5) == [["a"], ["b"], ["c"]]  # never an empty group
    with pytest.raises(ValueError, match="must be >= 1"):
        split_round_robin(["a"], 0)


KALDI_CONF = """\
command sbatch --export=PATH --account=lab   # every job
option name=* --job-name $0
default time=24:00:00
option time=* --time $0
option mem=* --mem-per-cpu $0
option mem=0
default gpu=0
option gpu=0 -p cpu
option gpu=* -p gpu --gres=gpu:$0 -c $0
"""


def test_slurm_conf_rules(tmp_path):
    path = tmp_path / "slurm.conf"
    path.write_text(KALDI_CONF)
    conf = SlurmConf.load(str(path))
    assert conf.command == ["sbatch", "--export=PATH", "--account=lab"]
    assert conf.sbatch_options({}) == ["--time", "24:00:00", "-p", "cpu"]
    assert conf.sbatch_options({"gpu": "2", "mem": "8G", "time": "4:00:00"}) == [
        "--time", "4:00:00", "-p", "gpu", "--gres=gpu:2", "-c", "2", "--mem-per-cpu", "8G"]
    assert conf.sbatch_options({"mem": "0", "name": "x"}) == ["--time", "24:00:00", "-p", "cpu"]
    with pytest.raises(SlurmConfError, match=rf"{path}: no 'option num_nodes=...' line for --num_nodes 2"):
        conf.sbatch_options({"num_nodes": "2"})
    path.write_text("command sbatch\noptoin gpu=* --gres=gpu:$0\n")
    with pytest.raises(SlurmConfError, match=rf"{path}:2: unknown line kind 'optoin'"):
        SlurmConf.load(str(path))
    with pytest.raises(SlurmConfError, match="not found"):
        SlurmConf.load(str(tmp_path / "missing.conf"))


def test_local_backend_runs_groups_with_logs(tmp_path):
    proc = run_parallel(tmp_path, '--name echo 2 bash -c "echo items: \\$*; echo threads \\$OMP_NUM_THREADS" x -- a b c')
    assert proc.returncode == 0, proc.stderr
    logs = tmp_path / "exp" / "logs"
    assert "items: a c\nthreads 1\n" in (logs / "echo.1.log").read_text()
    assert "items: b\nthreads 1\n" in (logs / "echo.2.log").read_text()
    assert not (logs / "echo.3.log").exists()


def test_local_backend_reports_failed_task_and_log(tmp_path):
    proc = run_parallel(tmp_path, '--name bad 3 bash -c "[ \\$1 = b ] && exit 4; echo done \\$1" x -- a b c')
    assert proc.returncode == 1
    log = Path("exp/logs/bad.2.log")
    assert f"task 2 bad.2 (b): exit status 4; log: {log}" in proc.stderr
    assert "\ndone a\n" in (tmp_path / "exp/logs/bad.1.log").read_text()
    assert "\ndone c\n" in (tmp_path / "exp/logs/bad.3.log").read_text()  # the others ran to the end


def test_gpu_jobs_never_outnumber_the_gpus(tmp_path):
    # 4 one-GPU jobs on GPUs 3 and 5: two at a time, each alone on its GPU
    cmd = ('--cmd "local --gpu 1" --name gpu 4 bash -c '
           '"echo \\$CUDA_VISIBLE_DEVICES \\$(date +%s.%N) > \\$1.start; sleep 0.6; date +%s.%N > \\$1.end" x -- a b c d')
    proc = run_parallel(tmp_path, cmd, env={"CUDA_VISIBLE_DEVICES": "3,5"})
    assert proc.returncode == 0, proc.stderr
    runs = []
    for item in "abcd":
        device, start = (tmp_path / f"{item}.start").read_text().split()
        runs.append((device, float(start), float((tmp_path / f"{item}.end").read_text())))
    assert {d for d, _, _ in runs} == {"3", "5"}
    for i, (d1, s1, e1) in enumerate(runs):
        overlapping = [(d2, s2, e2) for j, (d2, s2, e2) in enumerate(runs) if j != i and s2 < e1 and s1 < e2]
        assert len(overlapping) <= 1 and all(d2 != d1 for d2, _, _ in overlapping)
    assert gpu_slots(2, ["0", "1", "2", "3", "4"]) == ["0,1", "2,3"]
    with pytest.raises(RuntimeError, match="need 2 GPU"):
        gpu_slots(2, ["0"])
    proc = run_parallel(tmp_path, '--cmd "local --gpu 1" --name nogpu 2 true -- a', env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 1 and "need 1 GPU(s) each, but 0 are visible" in proc.stderr


CLAIMING_WORKER = """\
import sys, time
from espnet_delta.fileio import claim
for item in sys.argv[1:]:
    if claim(item):
        time.sleep(3.0 if item == "long" else 0.2)
        print("did", item, flush=True)
"""


def test_claimed_items_go_to_whichever_process_is_free(tmp_path):
    # Round-robin would give one process long + s2 and the other s1 + s3; with claims the process
    # that takes the 3 s item does only it while the other does the three 0.2 s ones.
    (tmp_path / "worker.py").write_text(CLAIMING_WORKER)
    for run in range(2):  # the second run must not be held back by the first run's claims
        proc = run_parallel(tmp_path, f'--name w --task_per_item 2 "{sys.executable}" worker.py -- long s1 s2 s3',
                            env={"PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr
        done = [sorted(line.split()[1] for line in (tmp_path / f"exp/logs/w.{k}.log").read_text().splitlines()
                       if line.startswith("did ")) for k in (1, 2)]
        assert sorted(done) == [["long"], ["s1", "s2", "s3"]], (run, done)
    claims = sorted(p.name for p in (tmp_path / "exp/logs/w.claims").iterdir())
    assert claims == ["long", "s1", "s2", "s3"]
