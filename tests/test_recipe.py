"""The stage engine end to end on a tiny mini_myst: stages 1-8 -> RESULTS.md; reruns skip work."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs2" / "mini_myst" / "asr1"


def run_engine(cwd: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", str(REPO / "local" / "asr.sh"), "--mini_corpus_dir", "downloads/mini_myst",
         "--mini_corpus_scale", "0.03", "--tiny_upstream_dir", "downloads/upstreams", "--subset_hours", "",
         "--nj", "2", "--adult_train_set", "libri_train", "--merge_lambdas", "0.2", "--merge_alphas", "0.8 0.9", *args],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise AssertionError(f"asr.sh {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A copy of the mini recipe's configs with one-epoch trainings and three fusion systems."""
    root = tmp_path_factory.mktemp("recipe")
    shutil.copytree(RECIPE / "conf", root / "conf")
    for name in ("finetune.yaml", "fusion.yaml"):
        conf = yaml.safe_load((root / "conf" / name).read_text())
        conf["max_epoch"] = 1
        (root / "conf" / name).write_text(yaml.safe_dump(conf))
    systems = yaml.safe_load((root / "conf" / "fusion_systems.yaml").read_text())
    keep = ["wavlm+dhubert_concat", "wavlm+dhubert+dw2v2_moe", "wavlm+hubert_concat_full"]
    (root / "conf" / "fusion_systems.yaml").write_text(yaml.safe_dump({k: systems[k] for k in keep}))
    return root


def test_all_stages_end_with_results_md(recipe):
    log = run_engine(recipe)
    results = (recipe / "RESULTS.md").read_text()
    for system in ("ft_wavlm", "ft_hubert", "ft_wav2vec2", "fusion_wavlm+dhubert_concat",
                   "fusion_wavlm+dhubert+dw2v2_moe", "fusion_wavlm+hubert_concat_full",
                   "merge_lerp_c0.5", "merge_ta", "merge_ties_k20"):
        assert system in results, f"{system} missing from RESULTS.md"
    for test_set in ("dev", "test"):
        assert (recipe / "exp" / "ft_wavlm" / "decode" / test_set / "score_wer" / "result.txt").is_file()
    assert re.search(r"Sum/Avg", (recipe / "exp" / "ft_hubert" / "decode" / "test" / "score_wer" / "result.txt").read_text())
    layout = (recipe / "dump" / "feats" / "train" / "layout.json").read_text()
    assert "hubert.pt" in layout and "wavlm.ft" in layout
    assert "Stage 8" in log
    # the SA grid was searched on dev and the chosen merge decoded on test
    grid = (recipe / "exp" / "merge_sa_grid.tsv").read_text()
    assert "0.2\t0.8" in grid and "0.2\t0.9" in grid and "# best: lambda=0.2" in grid
    assert re.search(r"merge_sa_l0\.2_a0\.[89]", results)
    # nothing was written into the generated corpus by preparation
    assert not list((recipe / "downloads" / "mini_myst").rglob("wav.scp"))


def test_rerun_skips_finished_work(recipe):
    before = (recipe / "exp" / "fusion_wavlm+dhubert_concat" / "valid.wer_ctc.best.pth").stat().st_mtime
    log = run_engine(recipe, "--stage", "3", "--stop_stage", "8")
    assert "already trained" in log
    assert "not decoding again" in log
    after = (recipe / "exp" / "fusion_wavlm+dhubert_concat" / "valid.wer_ctc.best.pth").stat().st_mtime
    assert before == after


def test_merged_checkpoint_decodes_with_espnet_speech2text(recipe, monkeypatch):
    """A merged checkpoint is a plain ESPnet model file: ESPnet's own inference loads and runs it.

    Like every ESPnet config, the merged config.yaml names files relative to the recipe dir.
    """
    import soundfile
    import torch

    from espnet_delta.asr.inference import Speech2Text

    monkeypatch.chdir(recipe)
    job = Path("exp") / "merge_ta"
    s2t = Speech2Text(asr_train_config=str(job / "config.yaml"), asr_model_file=str(job / "valid.wer_ctc.best.pth"),
                      ctc_weight=1.0, beam_size=2, lm_weight=0.0, device="cpu")
    merged = torch.load(job / "valid.wer_ctc.best.pth", map_location="cpu", weights_only=True)
    loaded = s2t.asr_model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in merged.items() if k in loaded)
    assert sum(k in loaded for k in merged) > 0.9 * len(merged)
    utt, path = (Path("data") / "test" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    wav, _ = soundfile.read(path, dtype="float32")
    text, tokens, *_ = s2t(wav)[0]
    vocab = set(yaml.safe_load((job / "config.yaml").read_text())["token_list"])
    assert set(tokens) <= vocab
