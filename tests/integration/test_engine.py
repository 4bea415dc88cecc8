"""The stage engine's shell text: every option in --help with its default, stages in numeric order,
one option parser and one log() for local/*.sh. No stage is run here (see test_recipe.py)."""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "local" / "asr.sh"
STAGE_IF = re.compile(r"^if \[ \$\{stage\} -le (\d+) \] && \[ \$\{stop_stage\} -ge (\d+) \]; then$", re.M)


def declared_options(script: Path) -> dict:
    """name -> default of the top-level assignments before ``parse_options "$@"`` (the options)."""
    head = script.read_text().split('\nparse_options "$@"')[0]
    options = {}
    for line in head.splitlines():
        m = re.match(r"([a-z_][a-z0-9_]*)=(\"[^\"]*\"|\S*)", line)
        if m:
            options[m.group(1)] = m.group(2).strip('"')
    return options


def help_lines(script: Path) -> list:
    proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def check_help_lists_options(script: Path, options: dict) -> None:
    lines = help_lines(script)
    for name, default in options.items():
        flag = re.compile(rf"(?<![\w-])--{name}(?!\w)")
        hits = [line for line in lines if line.lstrip().startswith("--") and flag.search(line)]
        assert hits, f"--{name} (declared in {script.name}) is missing from its --help"
        if default is None or "(required)" in hits[0]:  # no literal default
            continue
        assert "default:" in hits[0], f"--{name}: no default in {hits[0]!r}"
        shown = hits[0].split("default:", 1)[1]
        assert (default in shown) if default else ("''" in shown), f"--{name}: default {default!r} not in {hits[0]!r}"


def test_help_lists_every_option_with_its_default():
    options = declared_options(ENGINE)
    # the parser of this test finds what the design names (a guard against parsing nothing)
    assert {"stage", "stop_stage", "myst", "librispeech", "nj", "ngpu", "upstreams", "fusion_systems",
            "merge_lambdas", "adult_train_set", "decode_batch_size"} <= set(options)
    assert len(options) >= 35
    assert options["stop_stage"] == "10"
    check_help_lists_options(ENGINE, options)


@pytest.mark.parametrize("recipe", ["myst", "mini_myst", "mini_multilingual"])
def test_data_sh_uses_the_shared_parser_and_lists_its_options(recipe):
    data_sh = REPO / "egs2" / recipe / "asr1" / "local" / "data.sh"
    text = data_sh.read_text()
    assert "utils.sh" in text and "parse_options" in text
    assert "while [ $# -gt 0 ]" not in text  # no second parser
    options = declared_options(data_sh)
    if "myst_data.sh" in text:  # the MyST options live once, in the shared helper
        options = {**declared_options(REPO / "local" / "myst_data.sh"), **options}
        assert {"myst", "librispeech", "whisper_hyp", "data_dir", "max_duration", "subset_seed"} <= set(options)
    options.pop("recipe_dir")  # where the script is, not an option
    # defaults read from db.sh (e.g. myst=${MYST}) are shown resolved: only the option is checked
    check_help_lists_options(data_sh, {k: (None if "$" in v else v) for k, v in options.items()})


def test_myst_data_sh_needs_the_corpus():
    proc = subprocess.run(["bash", str(REPO / "egs2" / "myst" / "asr1" / "local" / "data.sh")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "--myst <root> is required" in proc.stdout + proc.stderr


def test_one_log_function_in_local_scripts():
    defining = [p.name for p in sorted((REPO / "local").glob("*.sh")) if re.search(r"^log\(\)", p.read_text(), re.M)]
    assert defining == ["utils.sh"]


def test_parse_options_sets_declared_variables_and_rejects_unknown_ones():
    script = f"""
        . {REPO / 'local' / 'utils.sh'}
        help_message() {{ echo HELP; }}
        a=1; b_c=x
        parse_options --a 2 --b-c="y z" rest
        echo "$a|$b_c|${{positional[*]}}"
    """
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "2|y z|rest"
    bad = subprocess.run(["bash", "-c", script.replace("--a 2", "--nope 2")], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --nope" in bad.stdout + bad.stderr


def test_stage_blocks_are_in_numeric_order_and_follow_the_data_flow():
    text = ENGINE.read_text()
    blocks = [(int(m.group(1)), int(m.group(2)), m.start()) for m in STAGE_IF.finditer(text)]
    # the design's data flow: model fetch (opt-in), data, tokens, pre-training, fine-tuning, decoding,
    # extraction, fusion, merging, decoding + RESULTS.md, analysis
    assert [b[0] for b in blocks] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert all(lo == hi for lo, hi, _ in blocks), "each block runs exactly one stage"
    # each block's first log line names its own stage
    ends = [b[2] for b in blocks[1:]] + [len(text)]
    for (n, _, start), end in zip(blocks, ends):
        first_log = re.search(r'log "Stage (\d+):', text[start:end])
        assert first_log and int(first_log.group(1)) == n, f"block of stage {n} logs {first_log and first_log.group(0)}"
    # no work between the blocks (e.g. a job list computed between two stages)
    for (n, _, start), nxt in zip(blocks, ends):
        gap = text[text.index("\nfi\n", start):nxt]
        assert "${python}" not in gap, f"python runs between the blocks of stage {n} and the next one"


def stage_bodies(text: str) -> dict:
    """stage -> the lines between its ``if [ ${stage} -le N ]...`` and its closing ``fi``."""
    blocks = [(int(m.group(1)), m.end()) for m in STAGE_IF.finditer(text)]
    return {n: text[start:text.index("\nfi\n", start)].strip("\n").splitlines() for n, start in blocks}


def test_stage_bodies_are_short_and_write_results_once_per_scoring_stage():
    bodies = stage_bodies(ENGINE.read_text())
    long = {n: len(lines) for n, lines in bodies.items() if len(lines) > 25}
    assert not long, f"stage bodies over 25 lines: {long}"
    # RESULTS.md is assembled once, at the end of each scoring stage, and nowhere else
    calls = {n: sum(line.strip() == "write_results" for line in lines) for n, lines in bodies.items()}
    assert {n for n, c in calls.items() if c} == {5, 9, 10} and set(calls.values()) <= {0, 1}
    for n in (5, 9, 10):
        assert bodies[n][-1].strip() == "write_results", f"stage {n} does more after writing RESULTS.md"
    assert len(re.findall(r"^\s*write_results$", ENGINE.read_text(), re.M)) == 3


def test_print_only_prints_without_running(tmp_path):
    """--print_only true: every command line after the prefix, no job started, nothing written."""
    exp = tmp_path / "exp"
    proc = subprocess.run(["bash", str(ENGINE), "--print_only", "true", "--stage", "2", "--stop_stage", "3",
                           "--exp_dir", str(exp), "--pretrained_upstream_dir", "pt", "--tiny_upstream_dir", "up",
                           "--nj", "2", "--pretrain_archs", "a b c"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = [line for line in proc.stdout.splitlines() if line.startswith("[print_only] ")]
    assert printed[0].startswith("[print_only] python -m espnet_delta.recipe.make_tokens --text data/train/text")
    # run_parallel: round-robin groups of the items, one line each: a c | b
    pretrain = [line for line in printed if "espnet_delta.bin.pretrain_upstreams" in line]
    assert [line.split("--archs ")[1] for line in pretrain] == ["a c", "b"]
    assert not any(tmp_path.iterdir()), "print-only wrote files"


def test_stages_check_their_models_first_and_stage_0_is_opt_in():
    text = ENGINE.read_text()
    assert re.search(r"^stage=1 ", text, re.M), "stage 0 (the model fetch) runs only with --stage 0"
    bodies = stage_bodies(text)
    for n in (1, 4, 5, 6, 8, 10):  # the check comes before the stage's first job
        first = next(i for i, line in enumerate(bodies[n]) if line.strip().startswith("log ") is False and (
                     "${python}" in line or "plan_jobs" in line
                     or "decode_planned" in line or "run_parallel" in line or "data.sh" in line or "merge_models" in line))
        check = next(i for i, line in enumerate(bodies[n]) if line.strip() == f"check_models {n}")
        assert check < first, f"stage {n} starts work before its model check"
    assert any("fetch_models --stages 0" in line for line in bodies[0])


def test_offline_stage_4_stops_in_one_line_before_any_training(tmp_path):
    """A hub model neither cached nor mapped: exit 2, one error line naming it, its path and stage 0."""
    (tmp_path / "up.yaml").write_text("wavlm: {upstream: wavlm_large}\n")
    env = {**os.environ, "HOME": str(tmp_path / "home")}  # an empty S3PRL cache
    env.pop("ESPNET_DELTA_MODEL_MAP", None)
    proc = subprocess.run(["bash", str(ENGINE), "--stage", "4", "--stop_stage", "4", "--upstreams", "wavlm",
                           "--upstream_conf", "up.yaml", "--exp_dir", "exp"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1, out[-3000:]
    assert "'wavlm_large'" in errors[0] and str(tmp_path / "home" / ".cache" / "s3prl") in errors[0]
    assert "--stage 0 --stop_stage 0" in errors[0] and "Traceback" not in out
    assert not (tmp_path / "exp" / "ft_wavlm").exists(), "a training was planned before the check"
