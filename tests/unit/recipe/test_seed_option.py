"""Training seeds: the planner's --seed (ESPnet's ``seed:`` key, nothing else; seed 0 renders what a
run without it renders, byte for byte) and the engine's --seeds (seed k's jobs under exp/seed<k>)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from espnet_delta.recipe import plan
from espnet_delta.recipe.train_config import with_seed

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "egs2" / "mini_myst" / "asr1"
CONF = RECIPE / "conf"
PRINT_PREFIX = "[print_only] "


def render(tmp_path: Path, name: str, *extra: str) -> dict:
    """bytes of every train.yaml (and train.full.yaml) the probe and fine-tuning families write, by job."""
    exp = tmp_path / name
    base = tmp_path / "ft.yaml"
    base.write_text("max_epoch: 8\nfrontend_conf: {frontend_conf: {}}\n")
    opts = ["--exp_dir", str(exp), "--upstreams", "wavlm hubert", "--upstream_conf", str(CONF / "upstreams.yaml"),
            "--finetune_config", str(base), "--probe_config", str(CONF / "probe.yaml"), "--tiny_upstream_dir", "up",
            "--data_dir", "data", "--shape_dir", "shapes", *extra]
    for family in ("finetune", "probe"):
        plan.main([family, *opts])
    return {str(p.relative_to(exp)): p.read_bytes() for p in sorted(exp.glob("*/train*.yaml"))}


def test_seed_0_renders_what_no_seed_renders_and_seed_2_adds_the_key_only(tmp_path):
    before = render(tmp_path, "none")
    assert set(before) == {"ft_wavlm/train.yaml", "ft_hubert/train.yaml", "probe_wavlm_pretrained/train.yaml",
                           "probe_wavlm_random/train.yaml"}
    assert render(tmp_path, "zero", "--seed", "0") == before  # byte for byte
    two = render(tmp_path, "two", "--seed", "2")
    assert set(two) == set(before)
    for job, text in two.items():
        seeded, plain = yaml.safe_load(text), yaml.safe_load(before[job])
        assert "seed" not in plain
        assert seeded.pop("seed") == 2, job
        assert seeded == plain, job  # nothing else changes


def test_seed_reaches_both_configs_of_a_dry_run(tmp_path):
    files = render(tmp_path, "dry", "--seed", "1", "--dry_run_steps", "2")
    full, capped = (yaml.safe_load(files[f"ft_wavlm/{n}"]) for n in ("train.full.yaml", "train.yaml"))
    assert full["seed"] == capped["seed"] == 1 and capped["max_epoch"] == 1


def test_with_seed_zero_is_the_config_itself():
    config = {"max_epoch": 3}
    assert with_seed(config, 0) is config
    assert with_seed(config, 5) == {"max_epoch": 3, "seed": 5} and config == {"max_epoch": 3}


def test_engine_seeds_plan_seed_1_under_exp_seed1(tmp_path):
    """--print_only: seed 0's jobs in exp, seed 1's in exp/seed1 (stage 4 again), RESULTS.md over both."""
    exp = tmp_path / "exp"
    proc = subprocess.run(["bash", "run.sh", "--print_only", "true", "--seeds", "0,1", "--stage", "4",
                           "--stop_stage", "5", "--exp_dir", str(exp)], cwd=RECIPE, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    commands = [shlex.split(line[len(PRINT_PREFIX):]) for line in proc.stdout.splitlines()
                if line.startswith(PRINT_PREFIX)]
    trained = [Path(w) for c in commands if c[2] == "espnet_delta.recipe.train_jobs" for w in c if w.startswith(str(exp))]
    assert {p.name for p in trained if p.parent == exp} >= {"ft_wavlm", "ft_hubert", "ft_wav2vec2"}
    seed1 = sorted(p.name for p in trained if p.parent == exp / "seed1")
    assert seed1 == sorted(p.name for p in trained if p.parent == exp)  # every system once more, for seed 1
    assert len(trained) == 2 * len(seed1)
    scores = [c for c in commands if c[2] == "espnet_delta.bin.score"]
    # seed 0's RESULTS.md, seed 1's own (in its exp dir), then the recipe's RESULTS.md over both seeds
    assert [c[c.index("--results_md") + 1] for c in scores] == ["RESULTS.md", str(exp / "seed1" / "RESULTS.md"),
                                                                "RESULTS.md"]
    assert scores[-1][scores[-1].index("--seed_runs") + 1:][:2] == [f"0={exp}", f"1={exp}/seed1"]
    assert not any("--seed_runs" in c for c in scores[:2])
    from espnet_delta.bin import score
    runs = score.get_parser().parse_args(scores[-1][3:]).seed_runs  # the command takes the line
    assert runs == [(0, exp), (1, exp / "seed1")]
    assert not exp.exists()


def test_engine_refuses_seeds_without_0(tmp_path):
    proc = subprocess.run(["bash", "run.sh", "--print_only", "true", "--seeds", "1,2", "--stage", "4",
                           "--stop_stage", "4", "--exp_dir", str(tmp_path / "exp")], cwd=RECIPE, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--seeds must hold 0" in proc.stdout + proc.stderr
