"""Every command in espnet_delta.bin and espnet_delta.recipe follows espnet2's CLI layout:
``get_parser()``, ``main(cmd)`` callable in-process, ``--help``, ``str2bool`` booleans that
take ``--flag``, ``--flag true`` and ``--flag false``; and every command line the stage
engine runs (as its print-only mode prints them, stages 1-10, opt-in families on) parses."""

from __future__ import annotations

import argparse
import importlib
import inspect
import shlex
import subprocess
from pathlib import Path

import pytest
from espnet2.utils.types import str2bool

import espnet_delta

PACKAGE = Path(espnet_delta.__file__).parent
# ESPnet's own asr_train / asr_inference parsers, started through the plugin's launcher
LAUNCHED_ESPNET_COMMANDS = {"espnet_delta.bin.asr_train", "espnet_delta.bin.asr_inference"}


def command_modules() -> list[str]:
    names = []
    for folder in ("bin", "recipe"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            name = f"espnet_delta.{folder}.{path.stem}"
            has_main = 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
            if has_main and name not in LAUNCHED_ESPNET_COMMANDS:
                names.append(name)
    return names


COMMANDS = command_modules()


def test_the_commands_are_found():
    # a broken discovery would make every parametrised test below vacuous
    assert {"espnet_delta.bin.score", "espnet_delta.bin.decode", "espnet_delta.recipe.train_jobs"} <= set(COMMANDS)


def bool_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.type is str2bool]


def parse_leniently(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parse ``args`` with required options waived and a dummy value for each positional."""
    for action in parser._actions:
        if action.option_strings:
            action.required = False
    positional = [next(iter(a.choices)) if a.choices else "x"
                  for a in parser._actions if not a.option_strings and a.nargs not in ("?", "*")]
    return parser.parse_args(positional + args)


@pytest.mark.parametrize("name", COMMANDS)
def test_get_parser_and_main_cmd(name):
    module = importlib.import_module(name)
    assert isinstance(module.get_parser(), argparse.ArgumentParser)
    params = inspect.signature(module.main).parameters
    assert list(params) == ["cmd"] and params["cmd"].default is None, f"{name}.main{inspect.signature(module.main)}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_in_process(name, capsys):
    module = importlib.import_module(name)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--log_level" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_booleans_are_str2bool_with_optional_value(name):
    parser = importlib.import_module(name).get_parser()
    flags = [a for a in parser._actions if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))]
    assert not flags, f"{name}: store_true/false flags {[a.option_strings for a in flags]}; use add_bool_argument"
    for action in bool_actions(parser):
        flag, dest = action.option_strings[0], action.dest
        assert getattr(parse_leniently(importlib.import_module(name).get_parser(), [flag]), dest) is True
        assert getattr(parse_leniently(importlib.import_module(name).get_parser(), [flag, "true"]), dest) is True
        assert getattr(parse_leniently(importlib.import_module(name).get_parser(), [flag, "false"]), dest) is False
        assert getattr(parse_leniently(importlib.import_module(name).get_parser(), []), dest) is action.default


def test_bool_flags_exist_where_expected():
    """The known booleans (so the test above checks something in each of these commands)."""
    expected = {
        "espnet_delta.bin.decode": {"no_sctk"},
        "espnet_delta.bin.extract_features": {"merge_only", "feats_fp16", "overwrite", "progress", "share_cnn"},
        "espnet_delta.bin.make_tiny_upstreams": {"overwrite"},
        "espnet_delta.bin.merge": {"allow_pickle", "progress"},
        "espnet_delta.bin.prepare_data": {"keep_long_test", "decode_audio"},
        "espnet_delta.bin.score": {"no_sctk", "require_sctk"},
    }
    for name, dests in expected.items():
        assert {a.dest for a in bool_actions(importlib.import_module(name).get_parser())} == dests, name


def test_bad_boolean_value_is_refused(capsys):
    from espnet_delta.bin import prepare_data

    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(["--myst", "m", "--out", "o", "--keep_long_test", "maybe"])
    assert exit_info.value.code == 2
    assert "--keep_long_test" in capsys.readouterr().err


def test_score_refuses_both_sctk_options(capsys):
    from espnet_delta.bin import score

    with pytest.raises(SystemExit):
        score.main(["--ref", "r", "--hyp", "h", "--out_dir", "o", "--no_sctk", "--require_sctk"])
    assert "at most one of --no_sctk and --require_sctk" in capsys.readouterr().err


# The command lines the stage engine really runs: local/asr.sh --print_only true prints each one
# (run_parallel: one line per group of items, as the back-end appends them) instead of running it.
# The mini_myst recipe with every opt-in family enabled; the modules come from the printed lines.
RECIPE = PACKAGE.parent / "egs2" / "mini_myst" / "asr1"
PRINT_PREFIX = "[print_only] "
OPT_IN = ["--interface_systems", "conf/interface_systems.yaml", "--whisper_config", "conf/whisper/finetune.yaml",
          "--sshr_systems", "../../mini_multilingual/asr1/conf/sshr_systems.yaml",
          "--sshr_config", "../../mini_multilingual/asr1/conf/sshr.yaml", "--langid_probe", "true",
          "--feats_fp16", "true", "--feats_num_shards", "3"]


@pytest.fixture(scope="module")
def engine_commands(tmp_path_factory):
    """[(module, args)] of every command line of ``run.sh --print_only true`` (all stages)."""
    exp = tmp_path_factory.mktemp("print_only") / "exp"
    proc = subprocess.run(["bash", "run.sh", "--print_only", "true", *OPT_IN, "--exp_dir", str(exp)], cwd=RECIPE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert not exp.exists(), "the print-only mode wrote into the exp dir"
    commands = []
    for line in proc.stdout.splitlines():
        if line.startswith(PRINT_PREFIX):
            words = shlex.split(line[len(PRINT_PREFIX):])
            assert words[:2] == ["python", "-m"], line
            commands.append((words[2], words[3:]))
    return commands


def test_the_engine_prints_the_commands_of_every_stage(engine_commands):
    modules = {m for m, _ in engine_commands}
    # a guard against a vacuous parse below: one module of each stage, the opt-in families' too
    assert {"espnet_delta.bin.prepare_data", "espnet_delta.recipe.make_tokens", "espnet_delta.bin.pretrain_upstreams",
            "espnet_delta.recipe.train_jobs", "espnet_delta.bin.decode", "espnet_delta.bin.beam_decode",
            "espnet_delta.recipe.sshr_results", "espnet_delta.recipe.interface_results", "espnet_delta.bin.langid_probe",
            "espnet_delta.bin.extract_features", "espnet_delta.recipe.merge_stage", "espnet_delta.bin.init_state",
            "espnet_delta.bin.gate_means", "espnet_delta.bin.analyze", "espnet_delta.bin.score"} <= modules
    assert len(modules) >= 20


def test_every_printed_command_line_parses(engine_commands):
    for module, args in engine_commands:
        parser = importlib.import_module(module).get_parser()
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{module} refuses the engine's command line: {shlex.join(args)}")


def parsed(engine_commands, module):
    return [importlib.import_module(module).get_parser().parse_args(args) for m, args in engine_commands if m == module]


def test_engine_command_lines_carry_the_planned_values(engine_commands):
    # one extraction task per feature-cache shard, each knowing the shard count
    extract = [a for a in parsed(engine_commands, "espnet_delta.bin.extract_features") if not a.merge_only]
    assert sorted(a.shard for a in extract) == [1, 2, 3]
    assert all(a.num_shards == 3 and a.feats_fp16 is True for a in extract)
    # stage 3: one process per architecture (run.sh's --pretrain_nj 3), each with the same options
    pretrain = parsed(engine_commands, "espnet_delta.bin.pretrain_upstreams")
    assert sorted(arch for a in pretrain for arch in a.archs) == ["hubert", "wav2vec2", "wavlm"]
    assert len(pretrain) == 3 and len({(tuple(a.epochs), a.out_dir) for a in pretrain}) == 1
    # stage 7 checks the cache of every set first (merge_only: nothing computed), as stage 6 wrote it
    checks = [a for a in parsed(engine_commands, "espnet_delta.bin.extract_features") if a.merge_only]
    assert len(checks) == len({tuple(a.out_dir) for a in checks}) >= 2
    assert all(a.shard is None and a.num_shards == 3 and a.feats_fp16 is True for a in checks)
    # the checkpoint each decode command reads follows its unit and decoder
    for a in parsed(engine_commands, "espnet_delta.bin.decode"):
        assert a.model_name == {"char": "valid.wer_ctc.best.pth", "phn": "valid.loss.best.pth"}[a.unit]
        assert all(j.name.startswith(("fusion_",) if a.input_type == "kaldi_ark" else ("ft_", "probe_", "sshr_", "if_"))
                   for j in a.jobs)
    assert [a.model_name for a in parsed(engine_commands, "espnet_delta.bin.beam_decode")] == ["valid.acc.best.pth"]
    # every process of a training stage gets the stage's whole list and claims its jobs one by one
    # (--task_per_item on the local back-end): the --nj lines of a stage are the same line, and no job is in two stages
    train_lines = [tuple(a.jobs) for a in parsed(engine_commands, "espnet_delta.recipe.train_jobs")]
    stages = list(dict.fromkeys(train_lines))
    assert all(train_lines.count(line) == min(2, len(line)) for line in stages)  # --nj 2
    trained = [j.name for line in stages for j in line]
    assert len(trained) == len(set(trained))  # each job trained once
    assert {"ft_wavlm", "ft_wavlm_adult", "probe_wavlm_random", "ft_whisper_adult", "sshr_sshr_phn",
            "if_wavlm+dhubert_hconv_phn", "fusion_wavlm+dhubert_moe"} <= set(trained)
    # the delta-fusion interface systems train after the fine-tuned models they read
    order = trained
    assert order.index("if_wavlm+dhubert_hconv_char") > order.index("ft_hubert")
    merges = parsed(engine_commands, "espnet_delta.recipe.merge_stage")
    assert [a.model_name for a in merges] == ["valid.wer_ctc.best.pth", "valid.acc.best.pth"]
    assert all(a.valid_set == "dev" for a in merges)


def test_fusion_speed_perturb_caches_the_speed_perturbed_set(tmp_path):
    exp = tmp_path / "exp"
    proc = subprocess.run(["bash", "run.sh", "--print_only", "true", "--fusion_speed_perturb", "true",
                           "--stage", "6", "--stop_stage", "7", "--exp_dir", str(exp)], cwd=RECIPE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    extract = [shlex.split(line[len(PRINT_PREFIX):]) for line in proc.stdout.splitlines()
               if line.startswith(PRINT_PREFIX) and "espnet_delta.bin.extract_features" in line]
    args = [importlib.import_module("espnet_delta.bin.extract_features").get_parser().parse_args(w[3:]) for w in extract]
    shards = {tuple(Path(d).name for d in a.data_dir) for a in args if not a.merge_only}  # stage 6
    checks = sorted(Path(d).name for a in args if a.merge_only for d in a.data_dir)  # stage 7, set by set
    assert shards == {("dev", "test", "train", "train_sp")} and checks == ["dev", "test", "train", "train_sp"]
    proc = subprocess.run(["bash", "run.sh", "--print_only", "true", "--fusion_speed_perturb", "true",
                           "--speed_perturb_factors", "", "--stage", "6", "--exp_dir", str(exp)], cwd=RECIPE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--fusion_speed_perturb true trains the fusion heads on <train_set>_sp" in proc.stderr
