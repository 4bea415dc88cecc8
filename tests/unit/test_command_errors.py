"""Every command that takes a file, given a file no test gave it before (issue 24, part 7).

A table of commands x bad inputs (missing, a folder, empty, not UTF-8, YAML that does not
parse or is not a mapping, a checkpoint cut short or not written by torch): each run of a
command's ``main([...])`` in-process ends with a non-zero exit status and exactly one error
line naming the file (a logged ERROR, or argparse's usage error for a bad option), never a
traceback. Inputs the commands read before ESPnet's half-minute import are chosen, so the
table runs in seconds. :func:`espnet_delta.cli.run_command` itself is tested below: bad input
becomes one line, ``--log_level DEBUG`` adds the traceback, a programming error keeps it.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple

import numpy as np
import pytest
import soundfile
import torch

from espnet_delta.cli import error_line, run_command

#: bad file contents, by name; ``missing`` writes nothing, ``folder`` makes a directory
LATIN1 = "utt1 caf\u00e9 au lait\n".encode("latin-1")
CONTENTS: Dict[str, bytes] = {
    "empty": b"",
    "latin1": LATIN1,
    "bad_yaml": b"a: [1, 2\nb: 3\n",
    "not_mapping": b"- one\n- two\n",
    "text_ckpt": b"this is not a checkpoint\n",
}


def make_bad(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # a good file the command's arguments made, replaced by the bad one
        path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "other_torch":  # a good torch file of something else
        torch.save([1, 2, 3], path)
    elif kind == "truncated_ckpt":
        torch.save({"w": torch.arange(64.0)}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind != "missing":
        path.write_bytes(CONTENTS[kind])
    return path


def tone(path: Path, samples: int = 1600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), 0.1 * np.sin(np.arange(samples) / 5.0), 16000, subtype="PCM_16")
    return path


def kaldi_dir(path: Path) -> Path:
    """A one-utterance data dir with real audio (wav.scp, text, utt2spk, utt2lang)."""
    path.mkdir(parents=True, exist_ok=True)
    wav = tone(path / "a.wav")
    (path / "wav.scp").write_text(f"utt1 {wav}\n")
    (path / "text").write_text("utt1 HELLO\n")
    (path / "utt2spk").write_text("utt1 spk1\n")
    (path / "utt2lang").write_text("utt1 en\n")
    return path


class Case(NamedTuple):
    module: str
    #: (tmp_path, bad file path) -> argv; the bad file is made after this call
    argv: Callable[[Path, Path], List[str]]
    #: where the bad file goes, relative to tmp_path
    bad: str
    kinds: tuple
    usage: bool = False  # argparse's usage error (exit status 2) rather than a logged ERROR


def _job(tmp: Path, bad: Path) -> List[str]:
    """A decode job dir whose config.yaml or model file may be the bad one."""
    job = tmp / "job"
    job.mkdir(exist_ok=True)
    if bad != job / "config.yaml":
        (job / "config.yaml").write_text("token_list: [a]\n")
    if bad != job / "model.pth":
        torch.save({}, job / "model.pth")
    data = kaldi_dir(tmp / "data" / "test")
    return [str(job), "--model_name", "model.pth", "--test", f"test={data / 'wav.scp'}", "--no_sctk"]


def _decode_scp(tmp: Path, bad: Path) -> List[str]:
    argv = _job(tmp, tmp / "nothing")
    return [*argv[:3], "--test", f"test={bad}", "--no_sctk"]


def _merge(tmp: Path, bad: Path) -> List[str]:
    good = tmp / "good.pt"
    torch.save({"w": torch.zeros(4)}, good)
    return ["--method", "lerp", "--models", str(good), str(bad), "--out", str(tmp / "out.pt")]


def _score(tmp: Path, bad: Path) -> List[str]:
    for name in ("ref", "hyp"):
        if bad != tmp / name:
            (tmp / name).write_text("utt1 HELLO\n")
    args = {"--ref": tmp / "ref", "--hyp": tmp / "hyp", "--out_dir": tmp / "score"}
    args["--" + bad.name] = bad
    return [*(str(x) for kv in args.items() for x in kv), "--no_sctk"]


def _extract(tmp: Path, bad: Path) -> List[str]:
    data = kaldi_dir(tmp / "data")
    return ["--config", str(bad), "--data_dir", str(data), "--out_dir", str(tmp / "feats"), "--progress", "false"]


def _upstream_conf_probe(tmp: Path, bad: Path) -> List[str]:
    data = kaldi_dir(tmp / "data")
    return ["--upstream_conf", str(bad), "--model", "wavlm", "--train_dir", str(data), "--test_dir", str(data),
            "--out_dir", str(tmp / "out")]


def _analyze(tmp: Path, bad: Path) -> List[str]:
    return ["--upstream_conf", str(bad), "--out_dir", str(tmp / "out"), "--gates", "false", "--wer_chart", "false"]


def _pretrain(tmp: Path, bad: Path) -> List[str]:
    return ["--in_dir", str(tmp / "in"), "--out_dir", str(tmp / "out"), "--work_dir", str(tmp / "work"),
            "--wav_scp", str(bad), "--archs", "hubert"]


def _whisper_scp(tmp: Path, bad: Path) -> List[str]:
    return ["--model", "tiny", "--wav_scp", str(bad), "--out", str(tmp / "hyp.tsv"), "--progress", "false"]


def _whisper_model(tmp: Path, bad: Path) -> List[str]:
    data = kaldi_dir(tmp / "data")
    return ["--model", str(bad), "--wav_scp", str(data / "wav.scp"), "--out", str(tmp / "hyp.tsv"),
            "--progress", "false"]


def _fetch(tmp: Path, bad: Path) -> List[str]:
    (tmp / "up.yaml").write_text("wavlm: {upstream: wavlm_large}\n")
    return ["--check", "true", "--stages", "6", "--model_map", str(bad), "--upstreams", "wavlm",
            "--upstream_conf", str(tmp / "up.yaml")]


def _render(tmp: Path, bad: Path) -> List[str]:
    return ["--base", str(bad), "--out", str(tmp / "out.yaml")]


def _dry_run(tmp: Path, bad: Path) -> List[str]:
    return ["--decode_config", str(bad), "--out", str(tmp / "out.yaml"), "--max_tokens", "5"]


def _paper_systems(tmp: Path, bad: Path) -> List[str]:
    return ["--tables", "2", "--systems_dir", str(tmp), "--write_systems", str(tmp / "out.yaml")]


def _option_file(tmp: Path, bad: Path) -> List[str]:
    return ["--config", str(bad), "--out", str(tmp / "whisper.pt")]


def _init_state(tmp: Path, bad: Path) -> List[str]:
    return ["--config", str(bad), "--out", str(tmp / "init.pth")]


def _prepare_hours(tmp: Path, bad: Path) -> List[str]:
    return ["--myst", str(tmp / "myst"), "--out", str(tmp / "data"), "--subset_hours", "1,x"]


def _decode_scoring(tmp: Path, bad: Path) -> List[str]:
    """Hypotheses already decoded (nothing loads a model): only the scoring reads the reference."""
    argv = _job(tmp, tmp / "nothing")
    (tmp / "job" / "decode" / "test").mkdir(parents=True)
    (tmp / "job" / "decode" / "test" / "text").write_text("utt1 HELLO\n")
    return [*argv, "--ref_dir", str(tmp / "data")]


def _gates(tmp: Path, bad: Path) -> List[str]:
    argv = _job(tmp, bad)
    return argv[:3] + ["--test", argv[4]]


def _interface(tmp: Path, bad: Path) -> List[str]:
    job = tmp / "if_wavlm_char"
    job.mkdir()
    (job / "config.yaml").write_text("frontend: delta_fusion\n")
    return ["--jobs", str(job), "--test_sets", "test", "--out", str(tmp / "if.md")]


def _sshr(tmp: Path, bad: Path) -> List[str]:
    job = tmp / "sshr_wavlm_char"
    job.mkdir()
    (job / "config.yaml").write_text("frontend: delta_fusion\n")
    return ["--jobs", str(job), "--data_dir", str(tmp / "data"), "--test_sets", "test", "--out", str(tmp / "s.md")]


def _pretrain_ckpt(tmp: Path, bad: Path) -> List[str]:
    data = kaldi_dir(tmp / "data")
    return ["--in_dir", str(bad.parent), "--out_dir", str(tmp / "out"), "--work_dir", str(tmp / "work"),
            "--wav_scp", str(data / "wav.scp"), "--archs", "hubert", "--progress", "false"]


def _tiny_upstreams(tmp: Path, bad: Path) -> List[str]:
    return ["--out_dir", str(bad), "--archs", "hubert"]


TEXT = ("empty", "latin1", "folder", "missing")
YAML = ("latin1", "bad_yaml", "not_mapping", "folder", "missing")
CKPT = ("truncated_ckpt", "text_ckpt", "other_torch", "empty", "folder", "missing")
CASES = {
    "decode.config": Case("bin.decode", _job, "job/config.yaml", YAML),
    "decode.model": Case("bin.decode", _job, "job/model.pth", ("folder", "missing")),
    "decode.ref_text": Case("bin.decode", _decode_scoring, "data/test/text", ("latin1", "folder", "missing")),
    "decode.wav_scp": Case("bin.decode", _decode_scp, "wav.scp", ("empty", "latin1")),
    "decode.wav_scp_usage": Case("bin.decode", _decode_scp, "wav.scp", ("folder", "missing"), usage=True),
    "init_state.config": Case("bin.init_state", _init_state, "config.yaml", ("latin1", "bad_yaml", "not_mapping")),
    "merge.models": Case("bin.merge", _merge, "m2.pt", CKPT),
    "score.ref": Case("bin.score", _score, "ref", TEXT),
    "score.hyp": Case("bin.score", _score, "hyp", ("latin1", "folder", "missing")),
    "score.utt2spk": Case("bin.score", _score, "utt2spk", ("latin1", "folder", "missing")),
    "extract_features.config": Case("bin.extract_features", _extract, "extract.yaml", YAML),
    "langid_probe.upstream_conf": Case("bin.langid_probe", _upstream_conf_probe, "up.yaml", YAML),
    "analyze.upstream_conf": Case("bin.analyze", _analyze, "up.yaml", YAML),
    "pretrain_upstreams.wav_scp": Case("bin.pretrain_upstreams", _pretrain, "wav.scp", TEXT),
    "transcribe_whisper.wav_scp": Case("bin.transcribe_whisper", _whisper_scp, "wav.scp", ("latin1", "folder", "missing")),
    "transcribe_whisper.model": Case("bin.transcribe_whisper", _whisper_model, "model.pt",
                                     ("truncated_ckpt", "text_ckpt", "other_torch")),
    "fetch_models.model_map": Case("bin.fetch_models", _fetch, "map.yaml", ("latin1", "bad_yaml", "folder", "missing")),
    "paper_tables.systems": Case("bin.paper_tables", _paper_systems, "table2_systems.yaml", YAML),
    "make_tiny_whisper.option_file": Case("bin.make_tiny_whisper", _option_file, "opts.yaml", YAML, usage=True),
    "render_config.base": Case("recipe.render_config", _render, "base.yaml", YAML, usage=True),
    "dry_run.decode_config": Case("recipe.dry_run", _dry_run, "decode.yaml", YAML),
    "gate_means.job": Case("bin.gate_means", _gates, "job/model.pth", ("missing",)),
    "interface_results.model": Case("recipe.interface_results", _interface, "if_wavlm_char/valid.wer_ctc.best.pth",
                                    ("truncated_ckpt", "text_ckpt", "other_torch", "empty", "missing")),
    "sshr_results.utt2lang": Case("recipe.sshr_results", _sshr, "data/test/utt2lang", ("latin1", "folder", "missing")),
    "pretrain_upstreams.in_dir": Case("bin.pretrain_upstreams", _pretrain_ckpt, "in/hubert.pt", CKPT),
    "make_tiny_upstreams.out_dir": Case("bin.make_tiny_upstreams", _tiny_upstreams, "out", ("empty",)),
}
TABLE = [pytest.param(name, kind, id=f"{name}-{kind}") for name, case in CASES.items() for kind in case.kinds]


def run_main(module: str, argv: List[str], caplog, capsys) -> tuple:
    """(exit status, error lines, everything printed or logged) of ``main(argv)`` in-process."""
    main = importlib.import_module(f"espnet_delta.{module}").main
    caplog.set_level(logging.INFO)
    try:
        code = main(argv) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all(r.exc_info is None for r in errors), "an ERROR record carries a traceback"
    lines = [r.getMessage() for r in errors] + [line for line in out.err.splitlines() if ": error: " in line]
    return code, lines, out.out + out.err + caplog.text


@pytest.mark.parametrize(("name", "kind"), TABLE)
def test_bad_file_is_one_error_line_naming_it(tmp_path, caplog, capsys, name, kind) -> None:
    case = CASES[name]
    bad = tmp_path / case.bad
    argv = case.argv(tmp_path, bad)
    make_bad(bad, kind)
    code, lines, text = run_main(case.module, argv, caplog, capsys)
    assert code == (2 if case.usage else 1) or (code != 0 and name == "fetch_models.model_map"), (code, text)
    assert len(lines) == 1, lines
    assert bad.name in lines[0] and "\n" not in lines[0], lines[0]
    assert "Traceback" not in text


def test_prepare_data_bad_subset_hours_is_a_usage_error(tmp_path, caplog, capsys) -> None:
    code, lines, text = run_main("bin.prepare_data", _prepare_hours(tmp_path, tmp_path), caplog, capsys)
    assert code == 2 and len(lines) == 1 and "--subset_hours" in lines[0] and "'1,x'" in lines[0], lines
    assert "Traceback" not in text


def test_an_empty_hypothesis_file_is_a_warning_with_the_count(tmp_path, caplog, capsys) -> None:
    """Not an error: every reference utterance is scored as an empty hypothesis, and said so."""
    argv = _score(tmp_path, tmp_path / "hyp")
    make_bad(tmp_path / "hyp", "empty")
    code, lines, text = run_main("bin.score", argv, caplog, capsys)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert code == 0 and not lines and "Traceback" not in text
    assert any("1 of 1 reference utterances" in w and str(tmp_path / "hyp") in w for w in warnings), warnings


def test_model_map_entry_that_is_a_folder_says_so(tmp_path) -> None:
    from espnet_delta.ssl.hub import HubModelError, mapped_file

    (tmp_path / "models").mkdir()
    (tmp_path / "map.yaml").write_text("wavlm_large: models\n")
    with pytest.raises(HubModelError, match=r"models \(mapped in .*map\.yaml\) not found as a file \(it is a folder\)"):
        mapped_file("wavlm_large", tmp_path / "map.yaml")


# ----------------------------------------------------------------- the helper itself
def _damaged_checkpoint(tmp_path: Path) -> Path:
    return make_bad(tmp_path / "model.pth", "truncated_ckpt")


def test_a_damaged_checkpoint_is_named_though_torch_does_not_name_it(tmp_path, caplog) -> None:
    path = _damaged_checkpoint(tmp_path)
    with pytest.raises(SystemExit) as info:
        run_command(lambda: torch.load(path, map_location="cpu", weights_only=True), "INFO")
    assert info.value.code == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith(f"{path}: not a readable torch checkpoint") and record.exc_info is None


def test_debug_log_level_adds_the_traceback(tmp_path, caplog) -> None:
    def body():
        raise FileNotFoundError(f"{tmp_path / 'x'}: not found")

    with pytest.raises(SystemExit):
        run_command(body, "DEBUG")
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "Traceback" in caplog.text


def test_a_programming_error_keeps_its_traceback() -> None:
    with pytest.raises(AttributeError):
        run_command(lambda: None.missing, "INFO")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        run_command(lambda: len(3), "INFO")  # type: ignore[arg-type]


def test_yaml_error_is_one_line_with_line_and_column() -> None:
    import yaml

    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("a: [1, 2\nb: 3\n")
    line = error_line(info.value)
    assert "\n" not in line and line.startswith("invalid YAML: line ") and "column" in line


def test_as_a_process_stderr_has_one_error_line_and_debug_the_traceback(tmp_path) -> None:
    """The stage engine's view: stderr of ``python -m``, without and with --log_level DEBUG."""
    (tmp_path / "hyp").write_text("utt1 HELLO\n")
    argv = [sys.executable, "-m", "espnet_delta.bin.score", "--ref", str(tmp_path / "gone"), "--hyp",
            str(tmp_path / "hyp"), "--out_dir", str(tmp_path / "s"), "--no_sctk"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if " ERROR: " in line]
    assert proc.returncode == 1 and len(errors) == 1 and "gone" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    debug = subprocess.run([*argv, "--log_level", "DEBUG"], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
