"""The Slurm back-end against a real single-node Slurm cluster (tools/start_local_slurm.sh).

The cluster (munged, slurmctld, slurmd from Debian's slurm-wlm) is the session fixture
``slurm`` of tests/conftest.py, shared with test_slurm_faults.py: started once in a temporary
folder and stopped afterwards, also when a test fails. Skipped only where it cannot start:
not root, or the packages are missing (tools/install_system_packages.sh installs them).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import soundfile

from conftest import perturb_all, write_espnet_checkpoint

REPO = Path(__file__).resolve().parents[3]
SLURM_CMD = "slurm --poll_max 1"  # poll squeue at least every second (tests)


def run_parallel(cwd: Path, args: str, **popen) -> subprocess.Popen:
    script = f'set -euo pipefail; . "{REPO}/local/utils.sh"; python="{sys.executable}"; run_parallel {args}'
    return subprocess.Popen(["bash", "-c", script], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 180):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def test_array_job_runs_every_group_as_a_task(slurm, tmp_path):
    rc, err = finish(run_parallel(tmp_path, f'--cmd "{SLURM_CMD}" --name echo 2 bash -c '
                                            '"echo task \\$SLURM_ARRAY_TASK_ID: \\$* threads \\$OMP_NUM_THREADS" x -- a b c'))
    assert rc == 0, err
    job = re.search(r"as Slurm array job (\d+) \(2 tasks\)", err).group(1)
    logs = tmp_path / "exp" / "logs"
    assert "task 1: a c threads 1\n" in (logs / "echo.1.log").read_text()
    assert "task 2: b threads 1\n" in (logs / "echo.2.log").read_text()
    assert f"job {job}_2" in (logs / "echo.2.log").read_text()


def test_failed_and_cancelled_tasks_are_named_with_their_logs(slurm, tmp_path):
    proc = run_parallel(tmp_path, f'--cmd "{SLURM_CMD}" --name mixed 3 bash -c '
                                  '"[ \\$1 = b ] && exit 3; [ \\$1 = c ] && sleep 300; echo done \\$1" x -- a b c')
    job, deadline = None, time.time() + 60
    while time.time() < deadline:  # wait until task 3 runs, then cancel it as a user would
        queue = subprocess.run(["squeue", "-h", "-n", "mixed", "-o", "%i %T"], capture_output=True, text=True).stdout
        match = re.search(r"^(\d+)_3 RUNNING$", queue, re.M)
        if match:
            job = match.group(1)
            subprocess.run(["scancel", f"{job}_3"], check=True)
            break
        time.sleep(0.3)
    rc, err = finish(proc)
    assert job is not None, f"task 3 never ran; stderr:\n{err}"
    logs = tmp_path / "exp" / "logs"
    assert rc == 1
    assert f"task {job}_2 mixed.2 (b): exit status 3; log: {logs / 'mixed.2.log'}" in err
    # scancel sends SIGTERM first: the task's wrapper may still record 143 (128 + 15) before Slurm kills it
    # (seen on a loaded machine); otherwise no status exists and Slurm's state is quoted
    cancelled = r"(no exit status \(Slurm: CANCELLED .*|exit status 143)"
    assert re.search(rf"task {job}_3 mixed.3 \(c\): {cancelled}; log: {logs / 'mixed.3.log'}", err)
    assert f"{job}_1" not in err.split("failed:")[-1]  # task 1 succeeded
    assert "done a" in (logs / "mixed.1.log").read_text()


# ---- sharded feature extraction: local vs Slurm, and a rerun after a failed task
def tiny_data(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        wav = root / f"u{i}.wav"
        soundfile.write(wav, 0.1 * rng.standard_normal(int(rng.integers(6000, 14000))), 16000, subtype="PCM_16")
        lines.append(f"u{i} {wav}")
    (root / "wav.scp").write_text("\n".join(lines) + "\n")
    return root


def read_feats(out: Path) -> dict:
    return {k: np.asarray(v) for k, v in kaldiio.load_scp(str(out / "feats.scp")).items()}


def test_extraction_on_slurm_equals_local_and_rerun_redoes_only_the_failed_shard(slurm, tiny_upstreams, tmp_path):
    data = tiny_data(tmp_path / "data")
    ft = write_espnet_checkpoint(tiny_upstreams["wavlm"], tmp_path / "ft_wavlm.pth", perturb_all(seed=1))
    ft_h = write_espnet_checkpoint(tiny_upstreams["hubert"], tmp_path / "ft_hubert.pth", perturb_all(seed=2))
    config = tmp_path / "extract.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "reference": {"upstream": "wavlm_local", "path_or_url": str(tiny_upstreams["wavlm"]), "finetuned": str(ft)},
        "others": [{"upstream": "hubert_local", "path_or_url": str(tiny_upstreams["hubert"]), "finetuned": str(ft_h)}],
    }))

    def extract(out: str) -> str:  # absolute out_dir: feats.scp then names absolute ark paths
        out = tmp_path / out
        return (f"-m espnet_delta.bin.extract_features --config {config} --data_dir {data} --out_dir {out} "
                "--num_shards 2 --device cpu --progress false --batch_size 2 --shard")

    # on Slurm, shard 2's task fails on its first try (before extracting anything); the local
    # run goes on at the same time
    marker = tmp_path / "failed_once"
    fail_once = (f'bash -c "if [ \\${{@: -1}} = 2 ] && [ ! -e {marker} ]; then touch {marker}; exit 9; fi; '
                 f'exec \\"\\$@\\"" fail_once')
    args = f'--cmd "{SLURM_CMD}" --name extract 2 {fail_once} "{sys.executable}" {extract("slurm")} -- 1 2'
    local = run_parallel(tmp_path, f'--cmd local --name local 2 "{sys.executable}" {extract("local")} -- 1 2')
    rc, err = finish(run_parallel(tmp_path, args))
    local_rc, local_err = finish(local)
    assert local_rc == 0, local_err
    out, logs = tmp_path / "slurm", tmp_path / "exp" / "logs"
    assert rc == 1
    job = re.search(r"as Slurm array job (\d+)", err).group(1)
    assert f"task {job}_2 extract.2 (2): exit status 9; log: {logs / 'extract.2.log'}" in err
    assert (out / "feats.1.scp").is_file() and not (out / "feats.2.scp").exists() and not (out / "feats.scp").exists()
    shard1 = {p.name: p.stat().st_mtime_ns for p in out.glob("feats.1.*")}
    # the rerun finishes shard 2 only: shard 1's files stay as they were
    rc, err = finish(run_parallel(tmp_path, args))
    assert rc == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("feats.1.*")} == shard1
    assert "extracted" not in (logs / "extract.1.log").read_text()
    assert "extracted 3 utterances" in (logs / "extract.2.log").read_text()
    # identical features and merged tables from both back-ends
    got, expected = read_feats(out), read_feats(tmp_path / "local")
    assert sorted(got) == [f"u{i}" for i in range(6)] == sorted(expected)
    for utt in expected:
        np.testing.assert_array_equal(got[utt], expected[utt])
    for name in ("feats_shape", "utt2num_frames", "layout.json"):
        assert (out / name).read_text() == (tmp_path / "local" / name).read_text().replace(str(tmp_path / "local"), str(out))
