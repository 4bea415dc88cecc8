"""Every command in espnet_delta.bin and espnet_delta.recipe follows espnet2's CLI layout:
``get_parser()``, ``main(cmd)`` callable in-process, ``--help``, ``str2bool`` booleans that
take ``--flag``, ``--flag true`` and ``--flag false``; and the command lines the stage
engine (local/asr.sh, local/data.sh) runs still parse."""

from __future__ import annotations

import argparse
import importlib
import inspect
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
    positional = ["x" for a in parser._actions if not a.option_strings and a.nargs not in ("?", "*")]
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
        "espnet_delta.bin.extract_features": {"merge_only", "fp16", "overwrite", "progress", "share_cnn"},
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


# The command lines of local/asr.sh and local/data.sh, as they reach Python (run_parallel
# appends its items after the command). Values are placeholders; the flags must parse.
STAGE_ENGINE_COMMANDS = [
    ("espnet_delta.bin.make_mini_corpus", ["--out", "mini", "--scale", "0.5", "--nj", "2"], {"scale": 0.5}),
    ("espnet_delta.bin.make_tiny_upstreams",
     ["--out_dir", "up", "--feature_extractor", "single", "--conv_channels", "512"], {"conv_channels": 512}),
    ("espnet_delta.bin.prepare_data",
     ["--myst", "m", "--out", "data", "--max_duration", "30", "--min_words", "3", "--max_wer", "0.5",
      "--subset_hours", "1,5,10", "--seed", "0", "--librispeech", "l", "--whisper_hyp", "w", "--keep_long_test"],
     {"keep_long_test": True, "max_wer": 0.5}),
    ("espnet_delta.recipe.make_tokens", ["--text", "data/train/text", "--out", "tokens.txt"], {}),
    ("espnet_delta.recipe.make_shapes", ["--data_dir", "data", "--sets", "dev", "train", "--out_dir", "dump/shapes"],
     {"sets": ["dev", "train"]}),
    ("espnet_delta.recipe.render_config",
     ["--base", "b.yaml", "--out", "o.yaml", "--set", "token_type=char", "--set", "use_preprocessor=true",
      "--set-from", "conf/upstreams.yaml:wavlm=frontend_conf.frontend_conf"],
     {"sets": ["token_type=char", "use_preprocessor=true"]}),
    ("espnet_delta.recipe.train_jobs", ["--ngpu", "0", "exp/ft_wavlm", "exp/ft_hubert"],
     {"jobs": [Path("exp/ft_wavlm"), Path("exp/ft_hubert")], "ngpu": 0}),
    ("espnet_delta.bin.decode",
     ["exp/ft_wavlm", "exp/ft_hubert", "--model_name", "valid.wer_ctc.best.pth", "--test", "test=data/test/wav.scp",
      "--input_type", "sound", "--batch_size", "8", "--ref_dir", "data", "--device", "cpu"],
     {"jobs": [Path("exp/ft_wavlm"), Path("exp/ft_hubert")], "no_sctk": False}),
    ("espnet_delta.bin.decode",
     ["--model_name", "valid.wer_ctc.best.pth", "--test", "test=dump/feats/test/feats.scp", "--input_type",
      "kaldi_ark", "--batch_size", "8", "--ref_dir", "data", "--device", "cpu", "exp/fusion_a"],
     {"jobs": [Path("exp/fusion_a")], "input_type": "kaldi_ark"}),
    ("espnet_delta.recipe.make_extract_config",
     ["--upstream_conf", "conf/upstreams.yaml", "--reference", "wavlm", "--others", "hubert", "wav2vec2",
      "--finetuned", "exp/ft_{name}/valid.wer_ctc.best.pth", "--out", "dump/feats/extract.yaml"],
     {"others": ["hubert", "wav2vec2"]}),
    ("espnet_delta.bin.extract_features",
     ["--config", "extract.yaml", "--data_dir", "data/dev", "--out_dir", "dump/feats/dev", "--data_dir", "data/test",
      "--out_dir", "dump/feats/test", "--nj", "2", "--fp16", "--shard", "1"],
     {"fp16": True, "shard": 1, "data_dir": ["data/dev", "data/test"]}),
    ("espnet_delta.bin.extract_features",
     ["--config", "extract.yaml", "--data_dir", "data/dev", "--out_dir", "dump/feats/dev", "--nj", "2", "--shard", "2"],
     {"fp16": False, "shard": 2}),
    ("espnet_delta.recipe.merge_stage",
     ["--child", "exp/ft_wavlm", "--adult", "exp/ft_wavlm_adult", "--base", "up/wavlm.pt", "--data_dir", "data",
      "--dev_set", "dev", "--test_sets", "test", "libri_test", "--lambdas", "0.1", "0.2", "--alphas", "0.7",
      "--schedules", "depth_power", "linear_exponent", "--lerp_coefs", "0.3", "0.7", "--ta_scales", "0.5", "1.0",
      "--ties_topks", "20", "--ties_scales", "0.5", "1.0",
      "--exp_dir", "exp", "--batch_size", "8", "--device", "cpu"],
     {"lambdas": [0.1, 0.2], "test_sets": ["test", "libri_test"]}),
    ("espnet_delta.bin.transcribe_whisper",
     ["--model", "large-v2", "--wav_scp", "data/train/wav.scp", "--wav_scp", "data/dev/wav.scp", "--out", "w.tsv",
      "--device", "cuda", "--nj", "2", "--max_tokens", "4", "--progress", "false", "--shard", "1"],
     {"shard": 1, "device": "cuda"}),
    ("espnet_delta.bin.gate_means",
     ["--model_name", "valid.wer_ctc.best.pth", "--test", "test=dump/feats/test/feats.scp", "--batch_size", "8",
      "--device", "cpu", "exp/fusion_a_moe", "exp/fusion_b"],
     {"jobs": [Path("exp/fusion_a_moe"), Path("exp/fusion_b")], "batch_size": 8}),
    ("espnet_delta.recipe.make_extract_config",
     ["--upstream_conf", "conf/upstreams.yaml", "--reference", "wavlm", "--others", "hubert",
      "--finetuned", "exp/ft_{name}/valid.wer_ctc.best.pth", "--finetuned_map",
      "hubert=exp/ft_hubert_adult/valid.wer_ctc.best.pth", "--out", "dump/feats/extract.yaml"],
     {"others": ["hubert"]}),
    ("espnet_delta.recipe.fusion_jobs",
     ["--systems", "conf/fusion_systems.yaml", "--base_config", "conf/fusion.yaml", "--feats_dir", "dump/feats",
      "--data_dir", "data", "--train_set", "train", "--valid_set", "dev", "--token_type", "char",
      "--token_list", "tokens.txt", "--exp_dir", "exp"],
     {"train_set": "train"}),
    ("espnet_delta.bin.score",
     ["--results_md", "RESULTS.md", "--scored", "exp/a/decode/test/score_wer", "exp/b/decode/test/score_wer",
      "--baseline", "ft_wavlm"],
     {"baseline": "ft_wavlm", "command": None}),
]


@pytest.mark.parametrize("name,cmd,expected", STAGE_ENGINE_COMMANDS, ids=[c[0] for c in STAGE_ENGINE_COMMANDS])
def test_stage_engine_command_lines_parse(name, cmd, expected):
    args = importlib.import_module(name).get_parser().parse_args(cmd)
    for key, value in expected.items():
        assert getattr(args, key) == value, (name, key)
