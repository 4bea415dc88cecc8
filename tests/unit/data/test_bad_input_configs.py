"""YAML configs, systems files and model maps edited by hand (issue 24, part 7).

Every config goes through :func:`espnet_delta.fileio.load_yaml`; the planner (the command
the stage engine calls to render trainings) turns its errors into one logged line and exit
status 1. Each case names the file, and for YAML syntax the line, on one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from espnet_delta.fileio import load_yaml
from espnet_delta.recipe import plan
from espnet_delta.ssl.hub import HubModelError, mapped_file

BOM = b"\xef\xbb\xbf"
BASE = {"frontend": "sshr", "frontend_conf": {"layer": 2}, "encoder": "sshr", "encoder_conf": {"cross_ctc_heads": 4},
        "model_conf": {"ctc_weight": 1.0}, "max_epoch": 1}


def _plan_args(tmp_path: Path, systems: bytes, upstreams: bytes = b"wavlm: {upstream: wavlm_local, path_or_url: up.pt}\n"):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "systems.yaml").write_bytes(systems)
    (tmp_path / "up.yaml").write_bytes(upstreams)
    return ["sshr", "--sshr_systems", str(tmp_path / "systems.yaml"), "--sshr_config", str(tmp_path / "base.yaml"),
            "--upstream_conf", str(tmp_path / "up.yaml"), "--upstreams", "wavlm", "--data_dir", "data",
            "--shape_dir", str(tmp_path / "shapes"), "--token_list", "tokens.txt", "--phone_token_list", "phn.txt",
            "--exp_dir", str(tmp_path / "exp"), "--sshr_units", "char"]


def test_systems_file_with_bom_and_crlf_plans_like_a_clean_one(tmp_path, capsys) -> None:
    plan.main(_plan_args(tmp_path, BOM + b"plain:\r\n  language_frame: false\r\n"))
    assert capsys.readouterr().out.split() == [str(tmp_path / "exp" / "sshr_plain_char")]


@pytest.mark.parametrize(
    ("file", "data", "message"),
    [
        ("systems.yaml", b"plain:\n  langauge_frame: false\n", "unknown keys ['langauge_frame']"),
        ("systems.yaml", b"plain: [layer, 3]\n", "must be a mapping"),
        ("systems.yaml", b"plain:\n  units: [chars]\n", "unknown units ['chars']"),
        ("systems.yaml", b"plain:\n\tlayer: 3\n", "invalid YAML: line 2, column 1"),
        ("systems.yaml", "plain: {note: caf\u00e9}\n".encode("latin-1"), ":1: config is not valid UTF-8"),
        ("systems.yaml", b"- plain\n- full\n", "expected a mapping at the top level"),
        ("up.yaml", b"wavlm: {upstream: wavlm_local, path_or_url: up.pt\n", "invalid YAML: line 2"),
    ],
    ids=["typo_key", "system_is_a_list", "typo_unit", "tab_indent", "latin1", "top_level_list", "unclosed_brace"],
)
def test_bad_configs_stop_the_planner_with_one_line(tmp_path, caplog, capsys, file, data, message) -> None:
    args = _plan_args(tmp_path, b"plain: {language_frame: false}\n")
    (tmp_path / file).write_bytes(data)
    with pytest.raises(SystemExit) as info:
        plan.main(args)
    assert info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert str(tmp_path / file) in errors[0] and message in errors[0], errors[0]
    assert capsys.readouterr().out == ""  # the stage engine reads nothing


def test_a_folder_given_as_a_config(tmp_path) -> None:
    (tmp_path / "conf.yaml").mkdir()
    with pytest.raises(FileNotFoundError, match=r"config not found: .*conf.yaml \(it is a folder\)"):
        load_yaml(tmp_path / "conf.yaml")


def test_an_empty_config_is_an_empty_mapping(tmp_path) -> None:
    (tmp_path / "conf.yaml").write_bytes(BOM + b"# only a comment\r\n")
    assert load_yaml(tmp_path / "conf.yaml") == {}


@pytest.mark.parametrize(
    ("entry", "message"),
    [("wavlm_large: models\n", "not found"), ("wavlm_large: gone.pt\n", "not found")],
    ids=["entry_is_a_folder", "entry_is_missing"],
)
def test_model_map_entries_that_are_not_files(tmp_path, entry, message) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "map.yaml").write_text(entry)
    with pytest.raises(HubModelError, match=message) as info:
        mapped_file("wavlm_large", tmp_path / "map.yaml")
    assert str(tmp_path / "map.yaml") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"wavlm: wavlm_large\nhubert: {upstream: hubert_local}\n", "entry 'wavlm' must be a mapping"),
        (b"wavlm: {upstream: [\n", "invalid YAML: line 2"),
        (b"hubert: {upstream: hubert_local}\n", "no entry 'wavlm'"),
        ("wavlm: {upstream: caf\u00e9}\n".encode("latin-1"), ":1: config is not valid UTF-8"),
    ],
    ids=["entry_not_a_mapping", "invalid_yaml", "missing_entry", "latin1"],
)
def test_make_extract_config_bad_upstream_table(tmp_path, caplog, data, message) -> None:
    from espnet_delta.recipe import make_extract_config

    (tmp_path / "up.yaml").write_bytes(data)
    (tmp_path / "ft_wavlm.pth").write_bytes(b"")
    (tmp_path / "ft_hubert.pth").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        make_extract_config.main(["--upstream_conf", str(tmp_path / "up.yaml"), "--reference", "wavlm", "--others", "hubert",
                                  "--finetuned", str(tmp_path / "ft_{name}.pth"), "--out", str(tmp_path / "x.yaml")])
    assert info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and str(tmp_path / "up.yaml") in errors[0] and message in errors[0], errors
    assert not (tmp_path / "x.yaml").exists()
