"""CER (ESPnet's character scoring) in score.json and RESULTS.md; RESULTS.md's environment block.

CER convention (ESPnet's ``score_cer``): the normalised words are split into
characters and each word boundary is one ``<space>`` token that counts like a
character; the tokens are aligned with sclite's costs. Expected numbers below are
counted by hand from that definition.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from espnet_delta.bin import score as score_cli
from espnet_delta.scoring import ScoringInputError, find_sctk_tool, load_score, score
from espnet_delta.scoring.results import (
    char_tokens,
    collect_environment,
    format_environment,
    format_results_md,
    git_commit,
)


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def scored(tmp_path: Path, system: str, hyp_lines: list[str], ref_lines: list[str]) -> Path:
    ref = write(tmp_path / "data" / "test" / "text", ref_lines)
    hyp = write(tmp_path / "exp" / system / "decode" / "test" / "text", hyp_lines)
    out = hyp.parent / "score_wer"
    score(ref, hyp, out, use_sctk=False, system=system, test_set="test")
    return out


def test_char_tokens_put_one_space_token_between_words():
    assert char_tokens(["AB", "CD"]) == ["A", "B", "<space>", "C", "D"]
    assert char_tokens(["DON'T"]) == ["D", "O", "N", "'", "T"]
    assert char_tokens([]) == []


def test_cer_of_one_substituted_character(tmp_path):
    # ref A B <space> C D (5 tokens), hyp A B <space> C E: 4 correct, 1 substitution -> CER 20 %;
    # on words: AB correct, CD -> CE substituted -> WER 50 %
    out = scored(tmp_path, "sys", ["u1 ab ce"], ["u1 AB CD"])
    summary = load_score(out)
    c = summary.char_counts
    assert (c.sentences, c.words, c.correct, c.substitutions, c.deletions, c.insertions) == (1, 5, 4, 1, 0, 0)
    assert summary.cer == pytest.approx(20.0) and summary.wer == pytest.approx(50.0)
    data = json.loads((out / "score.json").read_text())
    assert data["cer"] == pytest.approx(20.0) and data["char_counts"]["words"] == 5
    assert data["utterances"][0]["char_ops"] == "CCCCS"


def test_cer_counts_deleted_words_with_their_space(tmp_path):
    # ref T H E <space> C A T (7), hyp C A T: the cheapest sclite alignment (cost 4 x 3 = 12) deletes
    # T, H, E, <space> and matches C A T -> 4 deletions, CER 4/7 = 57.1 %.
    # u2: ref THE (3) / hyp THEM: 1 insertion -> set total 5 errors / 10 tokens = 50.0 %
    out = scored(tmp_path, "sys", ["u1 cat", "u2 them"], ["u1 The cat.", "u2 the"])
    summary = load_score(out)
    per_utt = {u.utt_id: u for u in summary.char_level()}
    assert per_utt["u1"].ops == "DDDDCCC" and per_utt["u2"].ops == "CCCI"
    assert summary.char_counts.words == 10 and summary.char_counts.errors == 5
    assert summary.cer == pytest.approx(50.0)


def test_old_score_json_without_char_ops_is_realigned(tmp_path):
    out = scored(tmp_path, "sys", ["u1 ab ce"], ["u1 AB CD"])
    data = json.loads((out / "score.json").read_text())
    for u in data["utterances"]:
        del u["char_ops"]
    (out / "score.json").write_text(json.dumps(data))
    assert load_score(out).cer == pytest.approx(20.0)
    data["utterances"][0]["char_ops"] = "CCS"  # 3 ops cannot cover 5 tokens
    (out / "score.json").write_text(json.dumps(data))
    with pytest.raises(ScoringInputError, match="malformed"):
        load_score(out)


def test_results_md_has_cer_tables_beside_wer_tables(tmp_path):
    refs = ["u1 AB CD", "u2 EF"]
    base = scored(tmp_path / "a", "base", ["u1 ab cd", "u2 ef"], refs)
    worse = scored(tmp_path / "b", "worse", ["u1 ab ce", "u2 ef"], refs)
    md = format_results_md([load_score(base), load_score(worse)], baseline="base", n_resamples=50)
    # worse: words 3 (AB CD EF), 1 substitution -> WER 33.3, S.Err 50.0;
    # characters 5 + 2 = 7, 1 substitution -> CER 14.3, Corr 85.7
    assert "## WER (%)\n\n|system|test|\n|---|---|\n|base|0.0|\n|worse|33.3|" in md
    assert "## CER (%)\n\n|system|test|\n|---|---|\n|base|0.0|\n|worse|14.3|" in md
    wer_part, cer_part = md.split("## test\n", 1)[1].split("### CER", 1)
    assert re.search(r"^\|worse\|2\|3\|66\.7\|33\.3\|0\.0\|0\.0\|33\.3\|50\.0\|[0-9.<]+\|$", wer_part, re.M), md
    assert re.search(r"^\|worse\|2\|7\|85\.7\|14\.3\|0\.0\|0\.0\|14\.3\|50\.0\|[0-9.<]+\|$", cer_part, re.M), md
    assert "|base|2|7|100.0|0.0|0.0|0.0|0.0|0.0|-|" in cer_part
    assert "## Environments" not in md  # only when an environment is given


@pytest.mark.skipif(find_sctk_tool("sclite") is None, reason="SCTK's sclite is not installed")
def test_cer_counts_match_sclite_on_character_trn(tmp_path):
    from espnet_delta.scoring import parse_sclite_sum, run_sclite, write_trn

    refs = ["u1 The cat.", "u2 the", "u3 AB CD", "u4 ABCXY", "u5 the red ball", "u6 it sticks to iron", "u7 ok"]
    hyps = ["u1 cat", "u2 them", "u3 ab ce", "u4 PQRAB", "u5 a red bell", "u6 its ticks two irons", "u7"]
    out = scored(tmp_path, "sys", hyps, refs)
    chars = load_score(out).char_level()
    write_trn(tmp_path / "ref.trn", chars, "ref")
    write_trn(tmp_path / "hyp.trn", chars, "hyp")
    ours = load_score(out).char_counts
    theirs = parse_sclite_sum(run_sclite(tmp_path / "ref.trn", tmp_path / "hyp.trn"))
    assert theirs == ours


# ------------------------------------------------------------------- environment


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_short_hash_dirty_and_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above tmp_path
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("venv/\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    full = git(repo, "rev-parse", "HEAD").strip()
    clean = git_commit(repo / "pkg")
    assert re.fullmatch(r"[0-9a-f]{7,}", clean) and full.startswith(clean)
    (repo / "new.txt").write_text("untracked\n")  # untracked files do not make the tree dirty
    assert git_commit(repo / "pkg") == clean
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert git_commit(repo / "pkg") == clean + "-dirty"
    (repo / "venv" / "pkg").mkdir(parents=True)  # a package inside an ignored virtual env
    assert git_commit(repo / "venv" / "pkg") == "unknown"
    (tmp_path / "plain").mkdir()
    assert git_commit(tmp_path / "plain") == "unknown"


def test_environment_block(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env = collect_environment("./run.sh --stage 8")
    assert env["command"] == "./run.sh --stage 8" and env["GPU"] == "none"
    assert env["python version"].startswith(platform.python_version())
    assert env["pytorch version"] == f"torch {torch.__version__.split('+')[0]}"
    assert env["espnet version"].startswith("espnet 20") and "s3prl" in env["s3prl version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", env["date"])
    assert f"({os.cpu_count()} logical cores)" in env["CPU"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda k: "NVIDIA H100")
    assert collect_environment()["GPU"] == "NVIDIA H100 x 2"
    block = format_environment({"date": "today", "command": "echo `x`"})
    assert block == ["## Environments", "- date: `today`", "- command: `` echo `x` ``", ""]


def test_score_cli_records_its_command(tmp_path):
    out = scored(tmp_path, "sys", ["u1 ab ce"], ["u1 AB CD"])
    md = tmp_path / "RESULTS.md"
    cmd = ["--results_md", str(md), "--scored", str(out)]
    score_cli.main(cmd)
    text = md.read_text()
    assert text.startswith("# RESULTS\n\n## Environments\n- date: `")
    line = next(ln for ln in text.splitlines() if ln.startswith("- command: "))
    assert line.endswith(f" -m espnet_delta.bin.score --results_md {md} --scored {out}`")
    assert re.search(r"^- Git hash: `([0-9a-f]{7,}(-dirty)?|unknown)`$", text, re.M)
    assert "|sys|1|5|80.0|20.0|0.0|0.0|20.0|100.0|" in text  # the CER row of the hand-computed example
    score_cli.main(cmd + ["--command", "./run.sh --stage 8 --stop_stage 8"])
    assert "- command: `./run.sh --stage 8 --stop_stage 8`" in md.read_text()
