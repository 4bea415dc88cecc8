"""Shared fixtures: tiny upstream checkpoints and ESPnet-style "fine-tuned" twins."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest
import torch

from espnet_delta.ssl.tiny import ARCHITECTURES, TinyConfig, make_tiny_upstream, weights_of

TINY = TinyConfig(num_layers=3, embed_dim=32, ffn_dim=64, num_heads=4, conv_channels=16)

#: The synthetic mini corpus is spoken by espeak-ng and resampled by sox; without them the
#: tests that need it are skipped (not errors), for the same reason everywhere.
MINI_CORPUS_TOOLS = ("espeak-ng", "sox")
MINI_CORPUS_SKIP_REASON = "espeak-ng and sox are required for the mini corpus (installed by `make install`)"


def mini_corpus_tools_missing() -> bool:
    return any(shutil.which(tool) is None for tool in MINI_CORPUS_TOOLS)


needs_mini_corpus_tools = pytest.mark.skipif(mini_corpus_tools_missing(), reason=MINI_CORPUS_SKIP_REASON)


@pytest.fixture(scope="session")
def tiny_upstreams(tmp_path_factory) -> Dict[str, Path]:
    """arch -> tiny pre-trained checkpoint (wavlm, hubert, wav2vec2)."""
    out = tmp_path_factory.mktemp("upstreams")
    return {a: make_tiny_upstream(a, out / f"{a}.pt", seed=k, config=TINY) for k, a in enumerate(ARCHITECTURES)}


def write_espnet_checkpoint(
    pretrained: Path,
    out: Path,
    change: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None,
    prefix: str = "frontend.upstream.upstream.model.",
) -> Path:
    """An ESPnet-ASR-style state dict holding the (optionally changed) upstream weights."""
    weights = weights_of(torch.load(pretrained, weights_only=True))
    state = {}
    for key, value in weights.items():
        state[prefix + key] = change(key, value.clone()) if change else value.clone()
    dim = next(v for k, v in weights.items() if k.endswith("layer_norm.weight")).numel()
    state["ctc.ctc_lo.weight"] = torch.zeros(5, dim)
    state["ctc.ctc_lo.bias"] = torch.zeros(5)
    torch.save(state, out)
    return out


def perturb_layer(index: int, scale: float = 0.05, seed: int = 0):
    """A change function that adds noise to transformer layer ``index`` only."""
    gen = torch.Generator().manual_seed(seed)

    def change(key: str, value: torch.Tensor) -> torch.Tensor:
        if key.startswith(f"encoder.layers.{index}.") and value.is_floating_point():
            return value + scale * torch.randn(value.shape, generator=gen)
        return value

    return change


def perturb_all(scale: float = 0.05, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def change(key: str, value: torch.Tensor) -> torch.Tensor:
        if key.startswith("encoder.") and value.is_floating_point():
            return value + scale * torch.randn(value.shape, generator=gen)
        return value

    return change


@pytest.fixture(scope="session")
def finetuned(tiny_upstreams, tmp_path_factory) -> Dict[str, Path]:
    """arch -> ESPnet checkpoint whose transformer weights differ from the pre-trained ones."""
    out = tmp_path_factory.mktemp("finetuned")
    return {
        a: write_espnet_checkpoint(p, out / f"{a}.pth", perturb_all(seed=k))
        for k, (a, p) in enumerate(tiny_upstreams.items())
    }


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory) -> Path:
    """A tiny mini_myst corpus prepared into Kaldi dirs (data/{train,dev,test}) + tokens.txt.

    Skips (like tests/test_mini_corpus.py) when espeak-ng or sox is missing.
    """
    if mini_corpus_tools_missing():
        pytest.skip(MINI_CORPUS_SKIP_REASON)
    from espnet_delta.data.mini_corpus import make_mini_corpus
    from espnet_delta.data.prepare import PrepConfig, prepare_data
    from espnet_delta.data.tokens import char_token_list, write_token_list

    root = tmp_path_factory.mktemp("mini")
    corpus = make_mini_corpus(root / "corpus", scale=0.02, seed=0)
    data = root / "data"
    prepare_data(data, corpus.myst_root, config=PrepConfig(subset_hours=()))
    write_token_list(char_token_list([data / "train" / "text"]), data / "tokens.txt")
    return data


@pytest.fixture(scope="session")
def cache_conf(tiny_upstreams, finetuned) -> Dict:
    """The extraction config of the feature-cache tests: the WavLM reference and a HuBERT delta."""

    def spec(arch):
        return {"upstream": f"{arch}_local", "path_or_url": str(tiny_upstreams[arch]),
                                                                "finetuned": str(finetuned[arch])}

    return {"reference": spec("wavlm"), "others": [spec("hubert")]}


@pytest.fixture(scope="session")
def cache_extractor(cache_conf):
    """Its extractor, built once (loading the four upstreams is the slow part)."""
    from espnet_delta.features.config import ExtractionConfig

    return ExtractionConfig.from_dict(cache_conf).build_extractor()


@pytest.fixture(scope="session")
def paper_models(tmp_path_factory) -> Path:
    """Narrow random checkpoints of every paper model (make_paper_checkpoints --width narrow: the
    real depths and head counts, 64 wide) and their model_map.yaml, written once (~5 s)."""
    from espnet_delta.bin import make_paper_checkpoints

    out = tmp_path_factory.mktemp("paper_models")
    make_paper_checkpoints.main(["--out_dir", str(out), "--width", "narrow", "--log_level", "WARNING"])
    return out


def first_utterances(mini_data: Path, out: Path, n: int) -> Path:
    """``out/wav.scp`` with the first ``n`` utterances of the mini corpus's train set."""
    out.mkdir(parents=True)
    lines = (mini_data / "train" / "wav.scp").read_text().splitlines()[:n]
    (out / "wav.scp").write_text("\n".join(lines) + "\n")
    return out


#: set to 1 by `make test-dry-run`: the narrow all-stage dry runs of the paper configs
DRY_RUN_ENV = "ESPNET_DELTA_TEST_DRY_RUN"


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ is recipe-level: marked ``slow``. Tests marked
    ``dry_run`` (narrow dry runs of every paper config through every stage: about 40 minutes
    on 2 cores, docs/testing.md) run only under `make test-dry-run`, not in `make test`."""
    import os

    skip = pytest.mark.skip(reason=f"narrow paper-config dry runs: `make test-dry-run` ({DRY_RUN_ENV}=1)")
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("dry_run") and os.environ.get(DRY_RUN_ENV) != "1":
            item.add_marker(skip)


def slurm_cluster_unavailable() -> str:
    """Why the local single-node Slurm cannot start here ('' when it can)."""
    import os

    if os.geteuid() != 0:
        return "the local Slurm cluster needs root (SlurmUser=root)"
    missing = [e for e in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol") if shutil.which(e) is None]
    if missing:
        return f"{', '.join(missing)} not found: install slurm-wlm and munge (tools/install_system_packages.sh)"
    return ""


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """SLURM_CONF of a running single-node cluster (tools/start_local_slurm.sh; set in os.environ
    for the session; its folder, with slurmd.pid, is the file's parent). Started once for every
    test module that uses it, stopped afterwards, also when a test fails; skipped only where it
    cannot start (not root, packages missing)."""
    import os
    import subprocess

    reason = slurm_cluster_unavailable()
    if reason:
        pytest.skip(reason)
    repo = Path(__file__).resolve().parents[1]
    folder = tmp_path_factory.mktemp("slurm")
    saved = os.environ.get("SLURM_CONF")
    try:
        start = subprocess.run([str(repo / "tools/start_local_slurm.sh"), str(folder)], capture_output=True,
                               text=True, timeout=120)
        if start.returncode == 3:
            pytest.skip(start.stderr.strip())
        assert start.returncode == 0, f"tools/start_local_slurm.sh failed:\n{start.stderr}"
        os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
        yield os.environ["SLURM_CONF"]
    finally:
        subprocess.run([str(repo / "tools/stop_local_slurm.sh"), str(folder)], timeout=60)
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
