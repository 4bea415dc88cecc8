"""Distributed training: DDP (never DataParallel), frozen upstreams per rank, ESPnet's trainer on gloo.

No GPU here: the two-rank checks run on CPUs with the gloo back-end, which is what
ESPnet's own launcher does for --ngpu 0 (espnet2/bin/launch.py). The GPU path differs only in
the device each rank moves its model to (FrozenUpstream forwards .to(); see test_upstream).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_delta.recipe import ddp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- options
def test_data_parallel_is_refused(tmp_path):
    with pytest.raises(ddp.DataParallelRefused, match="--ngpu 2 with multiprocessing_distributed false"):
        ddp.train_args(2, extra=["--multiprocessing_distributed", "false"])
    config = tmp_path / "train.yaml"
    config.write_text("multiprocessing_distributed: false\n")
    with pytest.raises(ddp.DataParallelRefused, match=str(config)):
        ddp.train_args(4, config=config)
    # the command line wins over the config; one GPU is never DataParallel
    assert ddp.train_args(4, config=config, extra=["--multiprocessing_distributed=true"])[-1] == "true"
    assert ddp.train_args(1, config=config) == ["--ngpu", "1"]


def test_train_args_single_and_multi_node(monkeypatch):
    for var in ("SLURM_STEP_NUM_NODES", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert ddp.train_args(0) == ["--ngpu", "0"]
    assert ddp.train_args(4) == ["--ngpu", "4", "--multiprocessing_distributed", "true"]
    with pytest.raises(ddp.DistributedConfigError, match="srun --ntasks-per-node=1"):
        ddp.train_args(4, num_nodes=2)
    monkeypatch.setenv("SLURM_STEP_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert ddp.train_args(4, num_nodes=2) == [
        "--ngpu", "4", "--multiprocessing_distributed", "true", "--dist_launcher", "slurm",
        "--dist_master_port", "20123"]  # 20000 + 123: the same on every node of job 123
    assert ddp.train_args(0, num_nodes=2)[-2:] == ["--dist_backend", "gloo"]
    with pytest.raises(ddp.DistributedConfigError, match="this srun step has 2 nodes"):
        ddp.train_args(4, num_nodes=3)
    assert ddp.rank_args(1, 2, 29500) == [
        "--ngpu", "0", "--multiprocessing_distributed", "false", "--dist_world_size", "2", "--dist_rank", "1",
        "--dist_master_addr", "127.0.0.1", "--dist_master_port", "29500", "--dist_backend", "gloo"]


# ---- FrozenUpstream in torch DDP, two gloo ranks
def _ddp_worker(rank: int, world: int, port: int, upstream: dict, out: str) -> None:
    import torch.distributed as dist

    from espnet_delta.asr.frontend.ssl_interface import SSLInterfaceFrontend

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    torch.manual_seed(0)  # the same trainable initialisation on both ranks (DDP also broadcasts it)
    frontend = SSLInterfaceFrontend(upstream=upstream, interface="weighted_sum")
    frozen = frontend.upstream.upstream
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    model = torch.nn.parallel.DistributedDataParallel(frontend)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    wav = torch.randn(2, 8000, generator=gen)
    feats, _ = model(wav, torch.tensor([8000, 6000]))
    feats.pow(2).mean().backward()
    torch.save({
        "grad": frontend.interface.weights.grad.clone(),
        "state_keys": list(frontend.state_dict()),
        "frozen_unchanged": all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items()),
        "frozen_grads": [p.grad for p in frozen.parameters() if p.grad is not None],
        "frozen_id": id(frozen),
        "frozen_device": str(next(frozen.parameters()).device),
        "pid": os.getpid(),
        "wav": wav,
    }, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_frozen_upstream_under_ddp_two_gloo_ranks(tiny_upstreams, tmp_path):
    from espnet_delta.asr.frontend.ssl_interface import SSLInterfaceFrontend

    upstream = {"upstream": "wavlm_local", "path_or_url": str(tiny_upstreams["wavlm"])}
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), upstream, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["pid"] != ranks[1]["pid"]  # each rank its own process, so its own upstream copy
    for r in ranks:
        assert not any("upstream" in k for k in r["state_keys"]) and r["state_keys"]  # outside the state dict
        assert r["frozen_unchanged"] and r["frozen_grads"] == [] and r["frozen_device"] == "cpu"
    # DDP averages the gradients of the trainable weights over the ranks: both hold
    # (g_0 + g_1) / 2, where g_r is the gradient of rank r's batch alone (computed here)
    torch.testing.assert_close(ranks[0]["grad"], ranks[1]["grad"])
    torch.manual_seed(0)
    frontend = SSLInterfaceFrontend(upstream=upstream, interface="weighted_sum")
    local = []
    for r in ranks:
        frontend.zero_grad()
        feats, _ = frontend(r["wav"], torch.tensor([8000, 6000]))
        feats.pow(2).mean().backward()
        local.append(frontend.interface.weights.grad.clone())
    assert not torch.allclose(local[0], local[1])  # the batches differ, so the averaging is visible
    torch.testing.assert_close(ranks[0]["grad"], (local[0] + local[1]) / 2)


# ---- ESPnet's trainer, two gloo ranks, every rank through the plugin launcher
def tiny_asr_data(root: Path, n: int = 8):
    """n random 0.5-1 s utterances with 3-letter texts, a char token list and shape files."""
    rng = np.random.default_rng(0)
    letters = "abcde"
    for split in ("train", "dev"):
        d = root / split
        d.mkdir(parents=True)
        scp, text, shape = [], [], []
        for i in range(n):
            utt = f"{split}_{i:02d}"
            samples = int(rng.integers(8000, 16000))
            soundfile.write(d / f"{utt}.wav", 0.1 * rng.standard_normal(samples), 16000, subtype="PCM_16")
            scp.append(f"{utt} {d / f'{utt}.wav'}")
            text.append(f"{utt} {''.join(rng.choice(list(letters), 3))}")
            shape.append(f"{utt} {samples}")
        (d / "wav.scp").write_text("\n".join(scp) + "\n")
        (d / "text").write_text("\n".join(text) + "\n")
        (d / "speech_shape").write_text("\n".join(shape) + "\n")
    (root / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", *letters, "<sos/eos>"]) + "\n")


def test_espnet_trainer_ddp_on_gloo_through_the_launcher(tiny_upstreams, tmp_path):
    tiny_asr_data(tmp_path)
    config = {
        "frontend": "ssl_interface",
        "frontend_conf": {"upstream": {"upstream": "wavlm_local", "path_or_url": str(tiny_upstreams["wavlm"])},
                          "interface": "weighted_sum"},
        "specaug": None, "normalize": None, "encoder": "identity", "decoder": "none", "model": "espnet_ctc_wer",
        "model_conf": {"ctc_weight": 1.0}, "optim": "adam", "optim_conf": {"lr": 0.01}, "max_epoch": 1,
        "batch_type": "sorted", "batch_size": 2, "num_workers": 0, "seed": 0,
        "best_model_criterion": [["valid", "loss", "min"]], "num_att_plot": 0,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    exp = tmp_path / "exp"
    base = [sys.executable, "-m", "espnet_delta.launch", "-m", "espnet2.bin.asr_train",
            "--config", str(tmp_path / "train.yaml"), "--output_dir", str(exp),
            "--token_type", "char", "--token_list", str(tmp_path / "tokens.txt"), "--use_preprocessor", "true"]
    for split in ("train", "dev"):
        kind = "train" if split == "train" else "valid"
        base += [f"--{kind}_data_path_and_name_and_type", f"{tmp_path / split}/wav.scp,speech,sound",
                 f"--{kind}_data_path_and_name_and_type", f"{tmp_path / split}/text,text,text",
                 f"--{kind}_shape_file", str(tmp_path / split / "speech_shape")]
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]
    procs = [subprocess.Popen(base + ddp.rank_args(r, 2, port), stdout=logs[r].open("w"), stderr=subprocess.STDOUT,
                              env=env) for r in range(2)]
    try:
        rcs = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    text = [log.read_text() for log in logs]
    assert rcs == [0, 0], "\n".join(t[-3000:] for t in text)
    # ESPnet ran distributed, 2 ranks on gloo (ranks log as <host>:<rank>/<world>), both to the end
    assert ":0/2]" in text[0], text[0][-2000:]
    written = yaml.safe_load((exp / "config.yaml").read_text())
    assert (written["dist_world_size"], written["dist_backend"], written["ngpu"]) == (2, "gloo", 0)
    saved = torch.load(exp / "valid.loss.best.pth", weights_only=True)
    assert saved and not any("upstream" in k for k in saved)  # the frozen upstream stays out
    # the validation stats, wer_ctc included, were averaged over the ranks (all_gather of tensors)
    assert "wer_ctc=" in text[0], text[0][-2000:]
