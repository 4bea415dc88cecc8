"""One engine run per recipe folder (issue 24, part 4): local/asr.sh's run lock (run_lock in local/utils.sh).

Real processes: the engine runs stage 1 of a stub recipe whose local/data.sh waits for a file,
so the first run is "running" for as long as the test wants.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "local" / "asr.sh"

# stage 1's local/data.sh (nothing under --print_only): records its PID, then waits for <recipe>/release (at most 60 s);
# with NEST set, first runs the engine again in the same exp_dir (a script that calls the engine itself)
DATA_SH = """#!/usr/bin/env bash
[ "${print_only:-false}" = true ] && exit 0
echo $$ > data_sh.pid
if [ -n "${NEST:-}" ]; then NEST= "$ENGINE" --stage 1 --stop_stage 1 --exp_dir "$(pwd)/exp"; echo "nested rc=$?"; fi
for _ in $(seq 600); do [ -e release ] && exit 0; sleep 0.1; done
exit 1
"""


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "local").mkdir()
    data_sh = tmp_path / "local" / "data.sh"
    data_sh.write_text(DATA_SH)
    data_sh.chmod(0o755)
    return tmp_path


def engine(recipe: Path, *args: str, env=None, **popen) -> subprocess.Popen:
    env = {**os.environ, "ENGINE": str(ENGINE), **(env or {})}
    env.pop("ESPNET_DELTA_RUN_LOCK", None)
    return subprocess.Popen(["bash", str(ENGINE), "--stage", "1", "--stop_stage", "1", *args], cwd=recipe, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the first run ended early:\n{proc.stdout.read()}"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout: float = 60):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def test_second_run_stops_at_once_naming_the_first_and_print_only_is_not_locked(recipe):
    first = engine(recipe, "--nj", "1")
    try:
        wait_for(recipe / "data_sh.pid", first)
        log = next((recipe / "exp" / "logs").glob("asr.*.log"))
        start = time.time()
        rc, out = finish(engine(recipe, "--exp_dir", str(recipe / "exp")))  # the same folder, spelled differently
        took = time.time() - start
        assert rc == 2, out
        errors = [line for line in out.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and len(out.strip().splitlines()) == 1, out
        assert f"PID {first.pid} " in errors[0], out
        assert f"({ENGINE} --stage 1 --stop_stage 1 --nj 1)" in errors[0], out
        assert f"log {log}" in errors[0], out
        assert took < 5, f"the second run took {took:.1f} s to stop"
        assert list((recipe / "exp" / "logs").glob("asr.*.log")) == [log], "the stopped run started a log"
        # --print_only runs nothing and takes no lock
        rc, out = finish(engine(recipe, "--print_only", "true"))
        assert rc == 0 and "ERROR" not in out, out
    finally:
        (recipe / "release").touch()
        first.wait(timeout=60)
    assert first.returncode == 0


def test_a_kill_9_leaves_no_lock_and_a_finished_run_none_either(recipe):
    first = engine(recipe)
    wait_for(recipe / "data_sh.pid", first)
    data_sh = int((recipe / "data_sh.pid").read_text())
    os.kill(first.pid, signal.SIGKILL)  # the engine alone: its stage 1 child goes on as an orphan
    first.wait(timeout=10)
    try:
        (recipe / "data_sh.pid").unlink()
        (recipe / "release").touch()  # the next run's data.sh returns at once
        start = time.time()
        rc, out = finish(engine(recipe))
        assert rc == 0, out
        assert "Successfully finished stages 1..1" in out
        assert time.time() - start < 5, "the next run waited for the killed run's lock"
        # a sequence of runs in one folder (local/paper_tables.sh calls the engine several times)
        for _ in range(2):
            rc, out = finish(engine(recipe))
            assert rc == 0 and "ERROR" not in out, out
    finally:
        try:
            os.kill(data_sh, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_an_engine_started_by_the_running_one_uses_its_lock(recipe):
    (recipe / "release").touch()
    rc, out = finish(engine(recipe, env={"NEST": "1"}))
    assert rc == 0, out
    assert re.search(r"run lock .*/exp/\.run\.lock: held by the calling run, PID \d+", out), out
    assert "nested rc=0" in out and "ERROR" not in out, out
