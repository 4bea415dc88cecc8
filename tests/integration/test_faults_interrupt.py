"""Interrupted work (issue 24, parts 1 and 5): real processes killed with real signals.

Each run is the real entry point (``train_jobs``, ``merge_stage``, ``bin.decode``,
``bin.transcribe_whisper``, ``espnet_delta.jobs``, ``local/asr.sh``) in a process group of its
own; the test waits for a file that proves the run is mid-work, then signals the whole group.
The ESPnet runs are forked from this process after one import of ESPnet's ASR task (~14 s per
process otherwise), exactly as ``train_jobs`` forks its trainings. Where a kill must land in the
middle of a write, the killed process's ``torch.save`` writes half the bytes and then stalls:
the kill itself is a real SIGKILL of the group.

The promise checked each time: a rerun of the same command finishes, redoes only what was not
finished, and ends equal to an uninterrupted run; nothing half-written is taken as complete.
Tests on the mini corpus skip (its fixture) where espeak-ng or sox is missing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ processes
def live_members(pgid: int) -> List[int]:
    """Processes of group ``pgid`` that are not zombies."""
    from espnet_delta.jobs.groups import group_members

    return group_members(pgid)


def session_members(sid: int) -> List[str]:
    """``pid state command`` of the live processes of session ``sid`` (ps)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [" ".join([r[0], r[2], r[3] if len(r) > 3 else ""]) for r in rows
            if len(r) >= 3 and r[1] == str(sid) and not r[2].startswith("Z")]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, log: Path = None) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.is_file() else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(0.05)


def fork_run(target: Callable[[], None], log: Path) -> int:
    """``target()`` in a forked child leading a new process group, one torch thread (as the
    local back-end runs jobs: OMP_NUM_THREADS=1), output into ``log``; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
            sys.stderr = sys.stdout
            import logging

            logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
            torch.set_num_threads(1)
            target()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    try:
        os.setpgid(pid, pid)
    except (PermissionError, ProcessLookupError):
        pass  # the child did it first
    return pid


def wait_exit(pid: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.time() > deadline:
            os.killpg(pid, signal.SIGKILL)
            raise AssertionError(f"process {pid} still running after {timeout} s")
        time.sleep(0.05)


def run_to_end(target: Callable[[], None], log: Path, timeout: float = 120) -> None:
    pid = fork_run(target, log)
    rc = wait_exit(pid, timeout)
    assert rc == 0, f"exit status {rc}\n{log.read_text(errors='replace')[-3000:]}"


def kill_group_when(pid: int, condition: Callable[[], bool], what: str, log: Path, timeout: float = 120) -> None:
    """SIGKILL to the whole group of ``pid`` once ``condition()``; then no member is left."""
    try:
        wait_until(lambda: condition() or os.waitpid(pid, os.WNOHANG)[0] != 0, timeout, what, log)
        assert condition(), f"the run ended before {what}\n{log.read_text(errors='replace')[-3000:]}"
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -signal.SIGKILL
    wait_until(lambda: not live_members(pid), 10, f"group {pid} to end")


def stall_when_saving(match: Callable[[str, object], bool], marker: Path) -> None:
    """In the process to be killed: a ``torch.save`` whose target path and object ``match``
    writes half of its bytes, touches ``marker`` and stalls (the kill lands mid-write)."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        name = str(getattr(f, "name", f))
        if not match(name, obj):
            return original(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        out = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
        out.write(data[: len(data) // 2])
        out.flush()
        os.fsync(out.fileno())
        marker.write_text(name)
        time.sleep(600)

    torch.save = save


def state_of(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_of(path: Path) -> Dict:
    """ESPnet's checkpoint.pth (model, optimizers, reporter), loaded with weights_only=True."""
    from espnet_delta.asr.train import checkpoint_globals

    with torch.serialization.safe_globals(checkpoint_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = state_of(a), state_of(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs between {a} and {b}"


# ------------------------------------------------------------------ ESPnet trainings (train_jobs)
@pytest.fixture(scope="module")
def espnet_imported():
    """ESPnet's ASR task, imported once here; the forked runs inherit it."""
    from espnet_delta.asr.train import import_task

    import_task()


def data_config(mini_data: Path, shape_dir: Path) -> Dict:
    """ESPnet data options of train/dev as config keys (train_jobs passes only --config)."""
    from espnet_delta.data.shapes import write_speech_shape

    shapes = {s: str(write_speech_shape(mini_data / s / "wav.scp", shape_dir / f"{s}_shape")) for s in ("train", "dev")}
    return {
        "token_type": "char", "token_list": str(mini_data / "tokens.txt"), "use_preprocessor": True,
        "train_data_path_and_name_and_type": [[f"{mini_data}/train/wav.scp", "speech", "sound"],
                                              [f"{mini_data}/train/text", "text", "text"]],
        "valid_data_path_and_name_and_type": [[f"{mini_data}/dev/wav.scp", "speech", "sound"],
                                              [f"{mini_data}/dev/text", "text", "text"]],
        "train_shape_file": [shapes["train"]], "valid_shape_file": [shapes["dev"]],
    }


CTC_HEAD = {
    "specaug": None, "normalize": None, "encoder": "identity", "decoder": "none", "model": "espnet_ctc_wer",
    "model_conf": {"ctc_weight": 1.0}, "optim": "adamw", "optim_conf": {"lr": 0.005}, "grad_clip": 1.0,
    "batch_type": "unsorted", "batch_size": 4, "num_workers": 0, "seed": 0,
    "best_model_criterion": [["valid", "wer_ctc", "min"], ["valid", "loss", "min"]], "keep_nbest_models": 1,
    "use_matplotlib": False, "use_tensorboard": False,  # seconds per epoch otherwise
}
EPOCHS = 2


def fusion_config(tiny_upstreams, finetuned) -> Dict:
    """A delta-fusion system (WavLM E_ft + HuBERT E_delta, concat) with a linear CTC head."""
    return {
        **CTC_HEAD, "max_epoch": EPOCHS,
        "frontend": "delta_fusion",
        "frontend_conf": {
            "reference": {"upstream": "wavlm_local", "path_or_url": str(tiny_upstreams["wavlm"]),
                          "finetuned": str(finetuned["wavlm"])},
            "deltas": [{"upstream": "hubert_local", "path_or_url": str(tiny_upstreams["hubert"]),
                        "finetuned": str(finetuned["hubert"])}],
            "fusion": "concat", "mode": "delta",
        },
    }


def write_job(job: Path, config: Dict) -> Path:
    job.mkdir(parents=True)
    (job / "train.yaml").write_text(yaml.safe_dump(config))
    return job


def train_jobs_target(job: Path, stall=None) -> Callable[[], None]:
    """``python -m espnet_delta.recipe.train_jobs --ngpu 0 <job>`` (it forks the training)."""
    def target():
        if stall is not None:
            stall_when_saving(*stall)
        from espnet_delta.recipe import train_jobs

        train_jobs.main(["--ngpu", "0", str(job)])

    return target


@pytest.fixture(scope="module")
def fusion_runs(espnet_imported, tiny_upstreams, finetuned, mini_data, tmp_path_factory):
    """A fusion training killed while writing epoch 2's checkpoint.pth, then rerun; and a clean one."""
    root = tmp_path_factory.mktemp("fusion_kill")
    config = {**fusion_config(tiny_upstreams, finetuned), **data_config(mini_data, root)}
    clean, killed = write_job(root / "clean", config), write_job(root / "killed", config)
    start = time.time()
    run_to_end(train_jobs_target(clean), root / "clean.log")
    clean_s = time.time() - start
    marker = root / "stalled"
    is_epoch2_checkpoint = lambda name, obj: "checkpoint.pth" in name and obj["reporter"]["epoch"] == 2  # noqa: E731
    pid = fork_run(train_jobs_target(killed, (is_epoch2_checkpoint, marker)), root / "killed.log")
    kill_group_when(pid, marker.is_file, "epoch 2's checkpoint.pth half written", root / "killed.log")
    after_kill = {p.name: p for p in killed.iterdir()}
    ckpt_epoch = checkpoint_of(killed / "checkpoint.pth")["reporter"]["epoch"]
    start = time.time()
    run_to_end(train_jobs_target(killed), root / "rerun.log")
    rerun_s = time.time() - start
    return {"clean": clean, "killed": killed, "after_kill": after_kill, "ckpt_epoch": ckpt_epoch,
            "marker": marker.read_text(), "rerun_log": (killed / "train.log").read_text(),
            "clean_s": clean_s, "rerun_s": rerun_s}


def test_fusion_training_killed_mid_checkpoint_resumes_bit_identical(fusion_runs):
    r = fusion_runs
    # the kill hit the write of checkpoint.pth (its temporary sibling), after epoch 1's was complete
    assert ".checkpoint.pth." in r["marker"] and r["marker"].endswith(".tmp")
    assert r["ckpt_epoch"] == 1  # the complete checkpoint of epoch 1 is what the rerun sees
    assert ".done" not in r["after_kill"]  # not taken as trained
    assert "2epoch.pth" not in r["after_kill"]
    assert "The training was resumed using" in r["rerun_log"]
    killed, clean = r["killed"], r["clean"]
    assert (killed / ".done").is_file()
    assert any(n.startswith(".checkpoint.pth.") for n in r["after_kill"]) and not list(killed.glob(".*.tmp"))
    for name in [f"{EPOCHS}epoch.pth", "valid.wer_ctc.best.pth", "valid.loss.best.pth"]:
        assert_same_state(killed / name, clean / name)
    ck, cc = (checkpoint_of(d / "checkpoint.pth") for d in (killed, clean))
    for key in cc["model"]:
        assert torch.equal(ck["model"][key], cc["model"][key])
    assert os.readlink(killed / "valid.wer_ctc.best.pth") == os.readlink(clean / "valid.wer_ctc.best.pth")


def ctc_finetune_config(tiny_upstreams) -> Dict:
    """CTC fine-tuning of the tiny WavLM (the recipe's ft_<name> systems, frontend s3prl_exact)."""
    return {
        **CTC_HEAD, "max_epoch": EPOCHS, "frontend": "s3prl_exact",
        "frontend_conf": {"frontend_conf": {"upstream": "wavlm_local", "path_or_url": str(tiny_upstreams["wavlm"])},
                          "multilayer_feature": False},
        "model_conf": {"ctc_weight": 1.0, "extract_feats_in_collect_stats": False},
    }


@pytest.fixture(scope="module")
def finetune_runs(espnet_imported, tiny_upstreams, mini_data, tmp_path_factory):
    """A CTC fine-tuning killed while ESPnet writes 2epoch.pth, i.e. after epoch 2's checkpoint.pth
    and before the model file and the links; then rerun; and a clean one (also the model that the
    decoding and merging tests use)."""
    root = tmp_path_factory.mktemp("finetune_kill")
    config = {**ctc_finetune_config(tiny_upstreams), **data_config(mini_data, root)}
    clean, killed = write_job(root / "clean", config), write_job(root / "killed", config)
    run_to_end(train_jobs_target(clean), root / "clean.log")
    marker = root / "stalled"
    is_epoch2_model = lambda name, obj: os.path.basename(name).startswith(".2epoch.pth.")  # noqa: E731
    pid = fork_run(train_jobs_target(killed, (is_epoch2_model, marker)), root / "killed.log")
    kill_group_when(pid, marker.is_file, "2epoch.pth half written", root / "killed.log")
    after_kill = {p.name: (os.readlink(p) if p.is_symlink() else None) for p in killed.iterdir()}
    ckpt_epoch = checkpoint_of(killed / "checkpoint.pth")["reporter"]["epoch"]
    run_to_end(train_jobs_target(killed), root / "rerun.log")
    return {"clean": clean, "killed": killed, "after_kill": after_kill, "ckpt_epoch": ckpt_epoch,
            "rerun_log": (killed / "train.log").read_text()}


def test_ctc_finetuning_killed_between_checkpoint_and_model_file_resumes_bit_identical(finetune_runs):
    r = finetune_runs
    killed, clean = r["killed"], r["clean"]
    # the kill left epoch 2's checkpoint.pth complete, but not its model file, and the links on epoch 1:
    # ESPnet alone would resume after epoch 2 and select the epoch-1 model as the dev-best
    assert r["ckpt_epoch"] == 2 and "2epoch.pth" not in r["after_kill"] and ".done" not in r["after_kill"]
    assert r["after_kill"]["latest.pth"] == "1epoch.pth"
    assert "epoch 2's model was not written (interrupted): restored" in r["rerun_log"]
    assert (killed / ".done").is_file()
    assert not list(killed.glob(".*.tmp"))  # the interrupted save's temporary file was removed
    for name in ["valid.wer_ctc.best.pth", "valid.loss.best.pth", "latest.pth"]:
        assert os.readlink(killed / name) == os.readlink(clean / name)
    for name in ["2epoch.pth", "valid.wer_ctc.best.pth", "valid.loss.best.pth"]:
        assert_same_state(killed / name, clean / name)


def test_damaged_checkpoint_is_moved_aside_and_the_training_starts_again(fusion_runs, tmp_path):
    """A truncated checkpoint.pth (as plain torch.save leaves it when killed mid-write, or a full
    disk): the rerun warns once naming it, moves it aside and trains from epoch 1 to the same model."""
    job = tmp_path / "job"
    shutil.copytree(fusion_runs["clean"], job, symlinks=True)
    (job / ".done").unlink()
    ckpt = job / "checkpoint.pth"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    run_to_end(train_jobs_target(job), tmp_path / "rerun.log")
    log = (job / "train.log").read_text()
    assert log.count(f"{ckpt} is damaged") == 1 and "starts again from epoch 1" in log
    assert (job / "checkpoint.pth.damaged").is_file()
    assert "The training was resumed" not in log
    assert_same_state(job / "valid.wer_ctc.best.pth", fusion_runs["clean"] / "valid.wer_ctc.best.pth")


# ------------------------------------------------------------------ decoding and scoring (bin.decode)
def copy_model(job: Path, out: Path, model: str = "valid.wer_ctc.best.pth") -> Path:
    out.mkdir(parents=True)
    shutil.copyfile(job / "config.yaml", out / "config.yaml")
    shutil.copyfile(job / model, out / model)
    return out


def decode_target(job: Path, mini_data: Path, stall_marker: Path = None) -> Callable[[], None]:
    """``python -m espnet_delta.bin.decode <job> --test dev=... --test test=... --ref_dir <data>``;
    with ``stall_marker``, the write of the second set's hypotheses stops half-way."""
    def target():
        from espnet_delta.asr import decoding
        from espnet_delta.bin import decode
        from espnet_delta.fileio import atomic_path

        if stall_marker is not None:
            original = decoding.write_text_atomic

            def half_then_stall(path, text, fsync=False):
                if Path(path).parent.name != "test":
                    return original(path, text, fsync)
                with atomic_path(path) as tmp:
                    with open(tmp, "w") as f:
                        f.write(text[: len(text) // 2])
                    stall_marker.write_text(str(tmp))
                    time.sleep(600)

            decoding.write_text_atomic = half_then_stall
        decode.main([str(job), "--model_name", "valid.wer_ctc.best.pth", "--test", f"dev={mini_data}/dev/wav.scp",
                     "--test", f"test={mini_data}/test/wav.scp", "--ref_dir", str(mini_data), "--batch_size", "2"])

    return target


def test_decoding_killed_mid_set_leaves_no_partial_hypotheses(finetune_runs, mini_data, tmp_path):
    clean = copy_model(finetune_runs["clean"], tmp_path / "clean" / "ft")  # one job name: the reports name it
    killed = copy_model(finetune_runs["clean"], tmp_path / "killed" / "ft")
    run_to_end(decode_target(clean, mini_data), tmp_path / "clean.log")
    marker = tmp_path / "stalled"
    pid = fork_run(decode_target(killed, mini_data, marker), tmp_path / "killed.log")
    kill_group_when(pid, marker.is_file, "the test set's hypotheses half written", tmp_path / "killed.log")
    dev, test = killed / "decode" / "dev", killed / "decode" / "test"
    assert (dev / "score_wer" / "score.json").is_file()  # the first set finished
    assert not (test / "text").exists() and not (test / "score_wer").exists()  # the second left nothing taken as done
    dev_mtime = (dev / "text").stat().st_mtime_ns
    run_to_end(decode_target(killed, mini_data), tmp_path / "rerun.log")
    assert f"{killed} dev: {dev / 'text'} exists, not decoding again" in (tmp_path / "rerun.log").read_text()
    assert (dev / "text").stat().st_mtime_ns == dev_mtime
    n_test = len((mini_data / "test" / "wav.scp").read_text().splitlines())
    for s in ("dev", "test"):
        text = (killed / "decode" / s / "text").read_text()
        assert text == (clean / "decode" / s / "text").read_text()
        assert (killed / "decode" / s / "score_wer" / "result.txt").read_text() == \
            (clean / "decode" / s / "score_wer" / "result.txt").read_text()
    assert len((test / "text").read_text().splitlines()) == n_test


# ------------------------------------------------------------------ stage 8 merging (recipe.merge_stage)
def merge_target(exp: Path, child: Path, adult: Path, base: Path, mini_data: Path, stall=None) -> Callable[[], None]:
    """Stage 8's command on a two-point lerp grid, chosen on dev, decoded on dev and test."""
    def target():
        if stall is not None:
            stall_when_saving(*stall)
        from espnet_delta.recipe import merge_stage

        merge_stage.main(["--child", str(child), "--adult", str(adult), "--base", str(base), "--data_dir", str(mini_data),
                          "--valid_set", "dev", "--test_sets", "test", "--methods", "lerp", "--lerp_coefs", "0.3", "0.7",
                          "--exp_dir", str(exp), "--batch_size", "2"])

    return target


def test_merging_killed_mid_grid_redoes_only_the_unfinished_points(finetune_runs, tiny_upstreams, mini_data, tmp_path):
    child = finetune_runs["clean"]
    adult = copy_model(child, tmp_path / "adult")  # an "adult" twin of the child model: every weight moved a little
    gen = torch.Generator().manual_seed(0)
    state = {k: v + 0.02 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in state_of(child / "valid.wer_ctc.best.pth").items()}
    torch.save(state, adult / "valid.wer_ctc.best.pth")
    base = tiny_upstreams["wavlm"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_to_end(merge_target(clean, child, adult, base, mini_data), tmp_path / "clean.log")
    marker = tmp_path / "stalled"
    second_point = lambda name, obj: "/merge_grid/lerp_c0.7/" in name  # noqa: E731
    pid = fork_run(merge_target(killed, child, adult, base, mini_data, (second_point, marker)), tmp_path / "killed.log")
    kill_group_when(pid, marker.is_file, "the second grid point's model half written", tmp_path / "killed.log")
    first, second = killed / "merge_grid" / "lerp_c0.3", killed / "merge_grid" / "lerp_c0.7"
    assert (first / "decode" / "dev" / "score_wer" / "score.json").is_file()
    assert not (second / "valid.wer_ctc.best.pth").exists()  # only its temporary file
    assert not (killed / "merge_grid.tsv").exists() and not (killed / "merge_results.md").exists()
    first_hyp = (first / "decode" / "dev" / "text").stat().st_mtime_ns
    run_to_end(merge_target(killed, child, adult, base, mini_data), tmp_path / "rerun.log")
    rerun = (tmp_path / "rerun.log").read_text()
    assert f"{first} dev: {first / 'decode' / 'dev' / 'text'} exists, not decoding again" in rerun
    assert (first / "decode" / "dev" / "text").stat().st_mtime_ns == first_hyp  # the finished point was not redone
    assert not list(second.glob(".*.tmp"))  # the interrupted write's temporary file was removed
    for name in ("merge_grid.tsv", "merge_results.md"):
        assert (killed / name).read_text() == (clean / name).read_text()
    finals = sorted(p.name for p in clean.glob("merge_lerp_*"))
    assert finals == sorted(p.name for p in killed.glob("merge_lerp_*")) and len(finals) == 1
    assert_same_state(killed / finals[0] / "valid.wer_ctc.best.pth", clean / finals[0] / "valid.wer_ctc.best.pth")
    for s in ("dev", "test"):
        hyp = Path(finals[0]) / "decode" / s / "text"
        assert (killed / hyp).read_text() == (clean / hyp).read_text()


# ------------------------------------------------------------------ Whisper screening (bin.transcribe_whisper)
def whisper_target(model: Path, mini_data: Path, out: Path, slow: bool = False) -> Callable[[], None]:
    """The screening command on the dev set, one utterance per batch; ``slow``: after the second
    batch the process stalls (a slow model: the kill surely lands before the third)."""
    def target():
        from espnet_delta.bin import transcribe_whisper
        from espnet_delta.whisper import transcribe

        if slow:
            write, written = transcribe._PartWriter.write, []

            def slow_write(self, hyps):
                write(self, hyps)
                written.append(1)
                time.sleep(600 if len(written) == 2 else 0)

            transcribe._PartWriter.write = slow_write
        sys.exit(transcribe_whisper.main(["--model", str(model), "--wav_scp", f"{mini_data}/dev/wav.scp",
                                          "--out", str(out), "--batch_size", "1", "--max_tokens", "8",
                                          "--progress", "false"]))

    return target


def test_whisper_screening_killed_mid_run_resumes_to_the_same_hypotheses(mini_data, tmp_path):
    import whisper  # noqa: F401  (imported once here, inherited by the forked runs)

    from espnet_delta.bin import transcribe_whisper  # noqa: F401
    from espnet_delta.whisper.tiny import make_tiny_whisper

    model = make_tiny_whisper(tmp_path / "tiny_whisper.pt")
    clean, killed = tmp_path / "clean" / "hyp.tsv", tmp_path / "killed" / "hyp.tsv"
    run_to_end(whisper_target(model, mini_data, clean), tmp_path / "clean.log")
    part = killed.with_name("hyp.tsv.part1of1")
    lines = lambda: part.read_text().count("\n") if part.is_file() else 0  # noqa: E731
    pid = fork_run(whisper_target(model, mini_data, killed, slow=True), tmp_path / "killed.log")
    kill_group_when(pid, lambda: lines() >= 2, "two hypotheses written", tmp_path / "killed.log")
    assert not killed.exists()  # only the part file: the screening never reads it as the result
    before = lines()
    total = len((mini_data / "dev" / "wav.scp").read_text().splitlines())
    assert before == 2 and total == 4
    run_to_end(whisper_target(model, mini_data, killed), tmp_path / "rerun.log")
    assert f"{before} done before" in (tmp_path / "rerun.log").read_text()
    assert killed.read_text() == clean.read_text() and len(clean.read_text().splitlines()) == total
    assert not part.exists()


# ------------------------------------------------------------------ SIGINT / SIGTERM: the job back-end and the engine
SLEEPER = "touch started.$0; sleep 60 & sleep 60"  # each task: a shell with two sleeping children


def start_session(argv: List[str], cwd: Path, env: Dict = None) -> subprocess.Popen:
    """``argv`` as the leader of a new session (and process group), like a command typed in a terminal."""
    return subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def assert_session_ends(proc: subprocess.Popen) -> None:
    """Nothing of the run's session is left (the tee of its log may take a moment to drain)."""
    wait_until(lambda: not session_members(proc.pid), 10, f"session {proc.pid} to end: {session_members(proc.pid)}")


@pytest.mark.parametrize("how", ["SIGTERM to the back-end", "SIGINT to the group (Ctrl-C)"])
def test_local_backend_stops_its_tasks_on_a_signal(tmp_path, how):
    sig = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    proc = start_session([sys.executable, "-m", "espnet_delta.jobs", "local", "--nj", "2", "--name", "sleepers",
                          "--log_dir", "logs", "--item", "1", "--item", "2", "--", "sh", "-c", SLEEPER], tmp_path)
    wait_until(lambda: (tmp_path / "started.1").exists() and (tmp_path / "started.2").exists(), 30, "both tasks")
    if sig == signal.SIGTERM:
        os.kill(proc.pid, sig)
    else:
        os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, out
    assert f"sleepers: interrupted by {sig.name}; its unfinished tasks are redone by a rerun" in out
    assert_session_ends(proc)
    for task in (1, 2):
        assert not (tmp_path / "logs" / f"sleepers.{task}.rc").exists()  # no exit status: not finished
        assert f"# interrupted by {sig.name} at" in (tmp_path / "logs" / f"sleepers.{task}.log").read_text()


@pytest.mark.parametrize("how", ["SIGTERM to the engine", "SIGINT to the group (Ctrl-C)"])
def test_engine_helpers_stop_the_backend_and_say_so(tmp_path, how):
    """run_parallel under the engine's traps (local/utils.sh): a signal to the shell alone reaches the back-end at once."""
    sig = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    (tmp_path / "stage.sh").write_text(
        f'set -euo pipefail\n. "{REPO}/local/utils.sh"\ntrap_interrupts\npython="{sys.executable}"\n'
        f'log "Stage 6: sleeping"\nrun_parallel --name sleepers 2 sh -c "${{SLEEPER}}" -- 1 2\nlog "not reached"\n')
    proc = start_session(["bash", "stage.sh"], tmp_path, env={"SLEEPER": SLEEPER})
    wait_until(lambda: (tmp_path / "started.1").exists() and (tmp_path / "started.2").exists(), 30, "both tasks")
    if sig == signal.SIGTERM:
        os.kill(proc.pid, sig)
    else:
        os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, out
    assert f"Stage 6: interrupted by SIG{sig.name[3:]}" in out and "Rerun the same command to resume" in out
    assert "not reached" not in out
    assert_session_ends(proc)
    assert not list((tmp_path / "logs").glob("*.rc"))


def test_slurm_backend_cancels_its_array_on_sigterm(slurm, tmp_path):
    """The same helpers on the local single-node Slurm: SIGTERM to the shell cancels the running array job."""
    (tmp_path / "stage.sh").write_text(
        f'set -euo pipefail\n. "{REPO}/local/utils.sh"\ntrap_interrupts\npython="{sys.executable}"\n'
        f'log "Stage 6: sleeping"\nrun_parallel --cmd "slurm --poll_max 1" --name f1sleep 1 sh -c "${{SLEEPER}}" -- 1\n')
    proc = start_session(["bash", "stage.sh"], tmp_path, env={"SLEEPER": SLEEPER})
    wait_until(lambda: (tmp_path / "started.1").exists(), 60, "the array task to run")
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "cancelling Slurm job" in out and "Stage 6: interrupted by SIGTERM" in out
    queue = lambda: subprocess.run(["squeue", "-h", "-n", "f1sleep"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    wait_until(lambda: not queue(), 30, "the array job to leave the queue")
    assert_session_ends(proc)


def engine_stage3(tiny_upstreams, mini_data) -> List[str]:
    """The engine's stage 3 (SSL pre-training) of the tiny WavLM on the mini corpus's train set."""
    return ["bash", str(REPO / "local" / "asr.sh"), "--stage", "3", "--stop_stage", "3", "--nj", "1",
            "--data_dir", str(mini_data), "--tiny_upstream_dir", str(tiny_upstreams["wavlm"].parent),
            "--pretrained_upstream_dir", "upstreams_pt", "--pretrain_archs", "wavlm",
            "--pretrain_opts", "--epochs 5 --num_clusters 4 --progress false"]


def test_engine_sigterm_during_pretraining_stops_the_stage_and_the_rerun_resumes(tiny_upstreams, mini_data, tmp_path):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    proc = start_session(engine_stage3(tiny_upstreams, mini_data), recipe)
    state = recipe / "exp" / "pretrain" / "wavlm" / "state.pt"
    wait_until(state.is_file, 60, "the first epoch's state.pt", None)
    os.kill(proc.pid, signal.SIGTERM)  # the engine alone, e.g. kill <pid of run.sh>
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "Stage 3: interrupted by SIGTERM" in out and "Rerun the same command to resume" in out
    assert_session_ends(proc)
    assert not (recipe / "upstreams_pt" / "wavlm.pt").exists()
    assert not list((recipe / "exp" / "logs").glob("pretrain.*.rc"))
    run_log = sorted((recipe / "exp" / "logs").glob("asr.*.log"))[-1]
    assert "Stage 3: interrupted by SIGTERM" in run_log.read_text()  # the run's log has the line too
    rerun = subprocess.run(engine_stage3(tiny_upstreams, mini_data), cwd=recipe, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    # the killed epoch is redone, the finished ones are not (tests/unit/ssl/test_pretrain.py: resumed = uninterrupted, bytewise)
    assert re.search(r"resuming iteration 1 at epoch [2-5]", (recipe / "exp" / "logs" / "pretrain.1.log").read_text())
    assert (recipe / "upstreams_pt" / "wavlm.pt").is_file()
