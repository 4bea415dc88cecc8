"""The narrow dry run of egs2/myst/asr1 (docs/dry_run.md): every stage of the paper recipe, with
merging (--adult_train_set libri_train) and the Whisper-small path, from a copy of the recipe.

One module-scoped run is shared by the tests. To keep it short the test cuts what the options
allow and the dry run's own caps do not: one optimizer step per training, two utterances per
decoded set, a corpus at scale 0.02, one point per merge grid (--merge_* options, one SA
reading), at most 4 tokens per Whisper hypothesis (--dry_run_max_tokens).

It takes about 12 minutes on the project's loaded 2-core machine (7.4 min of CPU; the narrow
Whisper models dominate: ~140 s per fine-tuning step, ~70 s of screening), more than the whole
suite's budget, so it runs only with ESPNET_DELTA_TEST_DRY_RUN=1 (docs/dry_run.md).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest
import yaml

from conftest import needs_mini_corpus_tools

pytestmark = [needs_mini_corpus_tools, pytest.mark.dry_run]  # make test-dry-run (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "egs2" / "myst" / "asr1"
DIR = "dry_run"
STEPS = 1
UTTS = 2
WHISPER = ("--whisper_config", "conf/tuning/whisper_small_finetune.yaml",
           "--whisper_decode_config", "conf/tuning/whisper_small_decode.yaml")
MERGE_GRIDS = ("--merge_schedules", "depth_power", "--merge_lambdas", "0.2", "--merge_alphas", "0.8",
               "--merge_lerp_coefs", "0.5", "--merge_ta_scales", "0.5", "--merge_ties_topks", "20",
               "--merge_ties_scales", "1.0")


def tree_digest(root: Path, skip: tuple = ()) -> Dict[str, str]:
    """relative path -> sha256 of every file and "dir" for every folder, outside ``skip``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The recipe copied to <tmp>/egs2/myst/asr1 beside links to the checkout's local/ and .venv."""
    root = tmp_path_factory.mktemp("dry")
    (root / "local").symlink_to(REPO / "local")
    (root / ".venv").symlink_to(REPO / ".venv")
    recipe = root / "egs2" / "myst" / "asr1"
    shutil.copytree(RECIPE, recipe, symlinks=True)
    before = tree_digest(recipe)
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    for var in ("ESPNET_DELTA_USAGE_LOG", "ESPNET_DELTA_STAGE", "ESPNET_DELTA_MODEL_MAP"):
        env.pop(var, None)
    proc = subprocess.run(
        ["./run.sh", "--dry_run", "true", "--dry_run_models", "narrow", "--dry_run_steps", str(STEPS),
         "--dry_run_utts", str(UTTS), "--dry_run_scale", "0.02", "--dry_run_max_tokens", "4",
         "--ngpu", "0", "--gpu_inference", "false", "--nj", "2", "--adult_train_set", "libri_train",
         *WHISPER, *MERGE_GRIDS],
        cwd=recipe, env=env, capture_output=True, text=True)
    return recipe, before, proc


def test_every_stage_ran(ran):
    recipe, _, proc = ran
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert re.search(r"Successfully finished stages 1\.\.10\s*$", proc.stdout)


def test_nothing_written_outside_the_dry_run_dir(ran):
    recipe, before, _ = ran
    assert tree_digest(recipe, skip=(DIR,)) == before


def trainings(recipe: Path):
    jobs = sorted(p.parent for p in (recipe / DIR / "exp").glob("*/train.yaml"))
    assert jobs, "no training job"
    return jobs


def test_trainings_are_capped_and_otherwise_the_full_config(ran):
    recipe, _, _ = ran
    conf = recipe / "conf"
    base = {"ft_": yaml.safe_load((conf / "finetune.yaml").read_text()),
            "ft_whisper": yaml.safe_load((conf / "tuning" / "whisper_small_finetune.yaml").read_text()),
            "fusion_": yaml.safe_load((conf / "fusion.yaml").read_text())}
    seen = set()
    for job in trainings(recipe):
        capped = yaml.safe_load((job / "train.yaml").read_text())
        full = yaml.safe_load((job / "train.full.yaml").read_text())
        accum = full.get("accum_grad", 1)
        # the cap: one epoch of STEPS optimizer steps (accum_grad iterations each); nothing else changed
        assert capped == {**full, "max_epoch": 1, "num_iters_per_epoch": STEPS * accum}, job.name
        prefix = max((p for p in base if job.name.startswith(p)), key=len)
        seen.add(prefix)
        for key in ("max_epoch", "num_iters_per_epoch", "accum_grad", "batch_type", "batch_size", "batch_bins"):
            assert full.get(key) == base[prefix].get(key), (job.name, key)
        # ESPnet ran exactly STEPS optimizer steps: total_count iterations = STEPS x accum_grad
        log = (job / "train.log").read_text()
        counts = re.findall(r"epoch results: \[train\] .*?total_count=(\d+)", log)
        assert counts and int(counts[-1]) == STEPS * accum, job.name
    assert seen == set(base)


def systems_of(recipe: Path):
    conf = recipe / "conf"
    fusion = yaml.safe_load((conf / "fusion_systems.yaml").read_text())
    upstreams = ["wavlm", "hubert", "wav2vec2"]  # run.sh's --upstreams (local/asr.sh's default)
    return ([f"ft_{u}" for u in upstreams] + [f"fusion_{s}" for s in fusion] + ["ft_whisper"])


def test_results_md_has_every_system(ran):
    recipe, _, _ = ran
    results = (recipe / DIR / "RESULTS.md").read_text()
    rows = {line.strip("|").split("|")[0] for line in results.splitlines() if line.startswith("|")}
    missing = [s for s in systems_of(recipe) if s not in rows]
    assert not missing, f"systems missing from RESULTS.md: {missing}"
    # stage 8: one merged model per method (one grid point each), for the SSL reference and Whisper
    merged = {r for r in rows if r.startswith("merge_")}
    for point in ("sa_depth_power_l0.2_a0.8", "lerp_c0.5", "ta_s0.5", "ties_k20_s1"):
        assert f"merge_{point}" in merged, (point, merged)
        assert any(r.startswith("merge_whisper") and r.endswith(point) for r in merged), (point, merged)


def usage(recipe: Path):
    return [json.loads(line) for line in (recipe / DIR / "exp" / "dry_run" / "usage.jsonl").read_text().splitlines()]


def test_usage_has_a_line_per_stage(ran):
    recipe, _, _ = ran
    records = usage(recipe)
    by_stage: Dict[str, list] = {}
    for r in records:
        by_stage.setdefault(r["stage"], []).append(r)
    # stage 3 runs no process without --pretrained_upstream_dir; 0 is the model writing before stage 1
    assert set(by_stage) >= {"0", "1", "2", "4", "5", "6", "7", "8", "9", "10"}
    for stage, lines in by_stage.items():
        assert max(max(r["rss_mib"], r.get("children_rss_mib") or 0) for r in lines) > 0, stage
    commands = {r["command"] for r in records}
    assert {"espnet_delta.bin.transcribe_whisper", "espnet_delta.bin.extract_features", "asr_train",
            "espnet_delta.recipe.merge_stage"} <= commands
    trained = [r for r in records if r["command"] == "asr_train"]
    assert {Path(r["job"]).name for r in trained} == {j.name for j in trainings(recipe)}
    assert all(r["params"] > 0 and r["seconds_per_step"] > 0 for r in trained)


def test_report_arithmetic(ran):
    recipe, _, proc = ran
    report = (recipe / DIR / "exp" / "dry_run" / "report.md").read_text()
    assert report.strip() in proc.stdout.replace("\r", "")
    section = report.split("## Trainings", 1)[1].split("\n\n")
    rows = [r.strip("|").split("|") for r in next(s for s in section if s.startswith("|")).splitlines()[2:]]
    table = {r[1].strip(): [c.strip() for c in r] for r in rows}
    for job, row in table.items():
        sps, steps, hours = float(row[4]), int(row[6].replace(",", "")), float(row[7].replace(",", ""))
        if job.startswith("ft_whisper"):
            assert steps == 8 * 1000 // 2, job  # whisper_small_finetune.yaml: 8 epochs x 1000 iterations / 2
        elif job.startswith("ft_"):
            assert steps == 20 * 1200 // 2, job  # finetune_large.yaml: 20 epochs x 1200 iterations / 2
        assert hours == pytest.approx(round(steps * sps / 3600, 2), abs=0.011 + steps * 0.0005 / 3600), job
    audio = report.split("## Per audio second", 1)[1]
    assert "| screening |" in audio and "| extraction |" in audio
