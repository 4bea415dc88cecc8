"""Every recipe dir follows ESPnet's layout: run.sh, cmd.sh, db.sh, path.sh and local/data.sh, shell
that bash accepts; path.sh finds the checkout from anywhere; each local/data.sh takes the options the
stage engine's stage 1 passes it (read from local/asr.sh, not copied here)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import needs_mini_corpus_tools

REPO = Path(__file__).resolve().parents[3]
ENGINE = REPO / "local" / "asr.sh"
RECIPES = sorted(p.parent.name for p in (REPO / "egs2").glob("*/asr1"))
SCRIPTS = ("run.sh", "local/data.sh")  # executed
SOURCED = ("cmd.sh", "db.sh", "path.sh")  # sourced by the scripts

# The design's split: options every data.sh takes, and the corpus options each recipe's data.sh adds.
GENERIC = {"data_dir", "nj", "subset_hours", "subset_seed", "max_duration", "min_words", "max_wer", "keep_long_test"}
MYST_OPTIONS = {"myst", "librispeech", "whisper_hyp", "whisper_model", "whisper_opts", "whisper_device", "whisper_nj",
                "whisper_cmd"}
CORPUS_OPTIONS = {
    "myst": MYST_OPTIONS,
    "mini_myst": MYST_OPTIONS | {"mini_corpus_dir", "mini_corpus_scale"},
    "mini_multilingual": {"multilingual_corpus_dir", "multilingual_corpus_scale"},
}


def bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env})


def stage1_block() -> str:
    text = ENGINE.read_text()
    start = text.index("if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then")
    return text[start:text.index("\nfi\n", start)]


def test_the_three_recipes_are_found():
    assert {"myst", "mini_myst", "mini_multilingual"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_ships_the_espnet_files_and_bash_accepts_them(recipe):
    root = REPO / "egs2" / recipe / "asr1"
    for name in SCRIPTS:
        path = root / name
        assert path.is_file(), f"{recipe} has no {name}"
        assert os.access(path, os.X_OK), f"{recipe}/{name} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n"), f"{recipe}/{name}: no bash shebang"
    for name in SOURCED:
        path = root / name
        assert path.is_file(), f"{recipe} has no {name}"
        assert not path.read_text().startswith("#!"), f"{recipe}/{name} is sourced, not run"
    for path in sorted(root.glob("*.sh")) + sorted(root.glob("local/*.sh")):
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{path.relative_to(REPO)}: {proc.stderr}"
        if path.read_text().startswith("#!"):
            assert os.access(path, os.X_OK), f"{path.relative_to(REPO)} is a script but not executable"


@pytest.mark.parametrize("recipe", RECIPES)
def test_path_sh_sets_the_checkout_environment_from_anywhere(recipe, tmp_path):
    path_sh = REPO / "egs2" / recipe / "asr1" / "path.sh"
    (tmp_path / "linked.sh").symlink_to(path_sh)  # a recipe copy that links the file resolves it too
    launcher = f"{REPO}/.venv/bin/python -m espnet_delta.launch"
    for sourced in (path_sh, tmp_path / "linked.sh"):
        proc = bash(f'set -euo pipefail; . "{sourced}"; echo "$repo_root|$python|${{PATH%%:*}}"', tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"{REPO}|{launcher}|{REPO}/.venv/bin"


@pytest.mark.parametrize("recipe", RECIPES)
def test_cmd_sh_sets_the_three_job_commands_per_backend(recipe):
    root = REPO / "egs2" / recipe / "asr1"
    show = '. ./cmd.sh || exit 3; echo "${train_cmd}|${cuda_cmd}|${decode_cmd}"'
    assert bash(show, root).stdout.strip() == "local|local --gpu 1|local"
    slurm = bash(show, root, cmd_backend="slurm").stdout.strip().split("|")
    assert slurm == ["slurm --config conf/slurm.conf", "slurm --config conf/slurm.conf --gpu 1",
                     "slurm --config conf/slurm.conf"]
    assert (root / "conf" / "slurm.conf").is_file()
    bad = bash(show, root, cmd_backend="pbs")
    assert bad.returncode == 3 and "unknown cmd_backend 'pbs'" in bad.stderr


@pytest.mark.parametrize("recipe", RECIPES)
def test_db_sh_defines_every_corpus_variable_run_sh_reads(recipe):
    root = REPO / "egs2" / recipe / "asr1"
    run = (root / "run.sh").read_text()
    assert ". ./db.sh" in run
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", run))
    assert read, f"{recipe}/run.sh reads no corpus location"
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (root / "db.sh").read_text(), re.M))
    assert read <= defined


def test_stage1_passes_the_generic_options_to_every_recipe():
    block = stage1_block()
    assert "./local/data.sh" in block
    first = re.search(r"data_opts=\((.*?)\)\n", block, re.S)
    assert first and set(re.findall(r"--(\w+)", first.group(1))) == GENERIC
    code = "\n".join(line.split("#", 1)[0] for line in block.splitlines())
    passed = set(re.findall(r"--(\w+)", code))  # --name value, and names looped over as "--${opt}"
    for names in re.findall(r"for opt in ([\w ]+); do", code):
        passed |= set(names.split())
    for recipe, names in CORPUS_OPTIONS.items():
        assert names <= passed, f"stage 1 does not pass {sorted(names - passed)} ({recipe})"


@pytest.mark.parametrize("recipe", RECIPES)
def test_data_sh_accepts_the_options_stage1_passes(recipe, tmp_path):
    """parse_options reads left to right: --help after the options exits 0 only if each was known."""
    names = sorted(GENERIC | CORPUS_OPTIONS.get(recipe, set()))
    argv = " ".join(f"--{n} x" for n in names)
    proc = bash(f"{REPO}/egs2/{recipe}/asr1/local/data.sh {argv} --help", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(f"--{n}" in proc.stdout for n in names)
    # an option of another corpus is refused, not ignored
    other = "--myst x" if recipe == "mini_multilingual" else "--multilingual_corpus_dir x"
    bad = bash(f"{REPO}/egs2/{recipe}/asr1/local/data.sh {other} --help", tmp_path)
    assert bad.returncode == 2 and "unknown option" in bad.stdout + bad.stderr


def test_stage1_outside_a_recipe_names_the_missing_data_sh(tmp_path):
    proc = bash(f"{ENGINE} --stage 1 --stop_stage 1", tmp_path)
    assert proc.returncode == 2 and "no executable local/data.sh" in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists()


@needs_mini_corpus_tools
def test_multilingual_data_sh_writes_the_corpus_data_dirs(tmp_path):
    """egs2/mini_multilingual/asr1/local/data.sh = make_multilingual_corpus + write_data_dirs."""
    from espnet_delta.data.multilingual_corpus import make_multilingual_corpus, write_data_dirs

    corpus, data = tmp_path / "corpus", tmp_path / "data"
    argv = (f"--multilingual_corpus_dir {corpus} --multilingual_corpus_scale 0.02 --nj 1 --data_dir {data} "
            "--subset_hours 1,5,10 --max_duration 1 --min_words 9")  # generic options: no effect here
    proc = bash(f"{REPO}/egs2/mini_multilingual/asr1/local/data.sh {argv}", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ref = make_multilingual_corpus(tmp_path / "ref_corpus", scale=0.02, seed=0)
    write_data_dirs(ref, tmp_path / "ref")

    def files(root: Path, corpus_root: Path) -> dict:
        return {p.relative_to(root).as_posix(): p.read_bytes().replace(str(corpus_root).encode(), b"C")
                for p in sorted(root.rglob("*")) if p.is_file()}

    got = files(data, corpus)
    assert {"train/text", "dev/text.phn", "test/utt2lang"} <= set(got)
    assert got == files(tmp_path / "ref", ref)


def printed(recipe: str, argv: str, cwd: Path) -> list:
    """The command lines local/data.sh prints under the engine's print-only mode, as word lists."""
    proc = bash(f"{REPO}/egs2/{recipe}/asr1/local/data.sh {argv}", cwd, print_only="true")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [shlex.split(line[len("[print_only] "):]) for line in proc.stdout.splitlines()
            if line.startswith("[print_only] ")]


def test_print_only_mode_prints_each_recipes_preparation_and_writes_nothing(tmp_path):
    prep = ["python", "-m", "espnet_delta.bin.prepare_data"]
    filters = ["--max_duration", "30", "--min_words", "3", "--max_wer", "0.5"]
    assert printed("mini_myst", "--mini_corpus_dir M --mini_corpus_scale 0.5 --nj 3 --data_dir D "
                   "--subset_hours 0.1,0.2 --myst ignored", tmp_path) == [
        ["python", "-m", "espnet_delta.bin.make_mini_corpus", "--out", "M", "--scale", "0.5", "--nj", "3"],
        prep + ["--myst", "M/myst", "--out", "D", *filters, "--subset_hours", "0.1,0.2", "--seed", "0",
                "--librispeech", "M/librispeech"],
    ]
    # Whisper screening of a missing hypothesis file: pass 1 without subsets, two shards, pass 2 with the file
    assert printed("myst", "--myst M --data_dir D --whisper_model large-v2 --whisper_hyp H --whisper_nj 2 "
                   "--whisper_device cuda --keep_long_test true", tmp_path) == [
        prep + ["--myst", "M", "--out", "D", *filters, "--subset_hours", "1,5,10", "--seed", "0", "--keep_long_test",
                "--subset_hours", ""],
        *[["python", "-m", "espnet_delta.bin.transcribe_whisper", "--model", "large-v2", "--wav_scp", "D/train/wav.scp",
           "--wav_scp", "D/dev/wav.scp", "--wav_scp", "D/test/wav.scp", "--out", "H", "--device", "cuda", "--nj", "2",
           "--shard", str(k)] for k in (1, 2)],
        prep + ["--myst", "M", "--out", "D", *filters, "--subset_hours", "1,5,10", "--seed", "0", "--keep_long_test",
                "--whisper_hyp", "H"],
    ]
    assert printed("mini_multilingual", "--multilingual_corpus_dir M --data_dir D --nj 1", tmp_path) == [
        ["python", "-m", "espnet_delta.bin.make_multilingual_corpus", "--out", "M", "--scale", "1.0", "--nj", "1",
         "--data_dir", "D"],
    ]
    assert not any(tmp_path.iterdir())
