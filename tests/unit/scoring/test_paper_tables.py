"""Tables 1-5 of arXiv 2601.20142 from fixture score dirs (espnet_delta/scoring/paper_tables.py,
espnet_delta/bin/paper_tables.py, local/paper_tables.sh).

Every fixture system is scored by the real scorer on a 40-utterance test set whose references
have 5 words each (200 words): a system with ``e`` word errors (one substitution per utterance
for the first ``e`` utterances, two when ``e > 40``) has WER ``100 e / 200 = e / 2`` percent.
Against ft_wavlm (40 errors, one in every utterance), a system with no errors differs in every
utterance (every bootstrap resample gives the same difference: p = 1 / 1001, marked), one with
39 errors differs in a single utterance (p near 1, not marked)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from espnet_delta.bin import paper_tables as cli
from espnet_delta.fileio import load_yaml
from espnet_delta.scoring import score
from espnet_delta.scoring.md_sections import replace_sections
from espnet_delta.scoring.paper_tables import ScoreBook, SizeRoot, build_table

REPO = Path(__file__).resolve().parents[3]
N_UTTS = 40
WORDS = ["ONE", "TWO", "THREE", "FOUR", "FIVE"]


def ref_text(data: Path, test_set: str) -> Path:
    path = data / test_set / "text"
    if not path.exists():
        path.parent.mkdir(parents=True)
        path.write_text("".join(f"utt{k:02d} {' '.join(WORDS)}\n" for k in range(N_UTTS)))
    return path


def scored(root: Path, data: Path, system: str, errors: int, test_set: str = "test") -> None:
    """Score ``system`` with ``errors`` word substitutions spread over the utterances."""
    lines = []
    for k in range(N_UTTS):
        n_sub = errors // N_UTTS + (1 if k < errors % N_UTTS else 0)
        words = ["WRONG"] * n_sub + WORDS[n_sub:]
        lines.append(f"utt{k:02d} {' '.join(words)}\n")
    decode = root / system / "decode" / test_set
    decode.mkdir(parents=True)
    (decode / "text").write_text("".join(lines))
    score(ref_text(data, test_set), decode / "text", decode / "score_wer", use_sctk=False, system=system,
          test_set=test_set)


def table(number, sizes, **kw):
    return build_table(number, ScoreBook(n_resamples=1000, seed=0), sizes, **kw)


def fusion(short, method, adult=False):
    return f"fusion_wavlm+d{short}{'_adult' if adult else ''}_{method}"


def test_table1_rows_columns_and_marks(tmp_path):
    data, full, small = tmp_path / "data", tmp_path / "exp", tmp_path / "exp1h"
    errors_full = {"ft_wavlm": 40, "ft_hubert": 50, "ft_wav2vec2": 60,
                   fusion("hubert", "weighted"): 39, fusion("hubert", "concat"): 0, fusion("hubert", "xattn"): 80,
                   fusion("w2v2", "weighted"): 40, fusion("w2v2", "concat"): 20, fusion("w2v2", "xattn"): 38}
    for system, e in errors_full.items():
        scored(full, data, system, e)
        scored(small, data, system, min(e + 40, 200))  # 1 h: 20 points worse, one more error everywhere
    t = table(1, [SizeRoot("full", full), SizeRoot("1 h", small)], test_set="test")
    assert t.header == ["Model", "Fusion", "full", "1 h"]
    assert t.heading.startswith("## Table 1: ")
    assert [r[:2] for r in t.rows] == [
        ["WavLM (fine-tuned)", ""], ["HuBERT (fine-tuned)", ""], ["W2V2 (fine-tuned)", ""],
        ["WavLM + ΔHuBERT", "weighted sum"], ["WavLM + ΔHuBERT", "concat"], ["WavLM + ΔHuBERT", "cross-attention"],
        ["WavLM + ΔW2V2", "weighted sum"], ["WavLM + ΔW2V2", "concat"], ["WavLM + ΔW2V2", "cross-attention"]]
    # full: e / 2 percent; marks against ft_wavlm (40 errors, one per utterance)
    assert [r[2] for r in t.rows] == ["20.00", "25.00", "30.00", "19.50", "0.00*", "40.00*", "20.00", "10.00*",
                                      "19.00"]
    # 1 h: (e + 40) / 2; ft_wavlm 80 errors (two per utterance); concat ΔHuBERT 40 (one each): marked
    assert [r[3] for r in t.rows] == ["40.00", "45.00", "50.00", "39.50", "20.00*", "60.00*", "40.00", "30.00*",
                                      "39.00"]
    assert not t.missing


def test_table2_picks_the_method_on_dev(tmp_path):
    data, full = tmp_path / "data", tmp_path / "exp"
    for system, e in {"ft_wavlm": 40, "ft_hubert": 0, "ft_wav2vec2": 39}.items():
        scored(full, data, system, e)
    # dev: cross-attention best for HuBERT, weighted sum for W2V2 (a tie with concat: the first)
    dev = {("hubert", "weighted"): 30, ("hubert", "concat"): 20, ("hubert", "xattn"): 10,
           ("w2v2", "weighted"): 10, ("w2v2", "concat"): 10, ("w2v2", "xattn"): 30}
    test = {("hubert", "weighted"): 0, ("hubert", "concat"): 0, ("hubert", "xattn"): 80,
            ("w2v2", "weighted"): 0, ("w2v2", "concat"): 2, ("w2v2", "xattn"): 0}
    for (short, method), e in dev.items():
        scored(full, data, fusion(short, method), e, "dev")
        scored(full, data, fusion(short, method), test[(short, method)], "test")
    t = table(2, [SizeRoot("full", full)], test_set="test", valid_set="dev")
    assert t.header == ["Model", "Fusion", "WER (test)"]
    assert t.rows == [["WavLM (fine-tuned)", "", "20.00"], ["HuBERT (fine-tuned)", "", "0.00*"],
                      ["W2V2 (fine-tuned)", "", "19.50"], ["WavLM + ΔHuBERT", "cross-attention", "40.00*"],
                      ["WavLM + ΔW2V2", "weighted sum", "0.00*"]]


def test_table3_marks_against_the_finetuned_fusion(tmp_path):
    data, full, small = tmp_path / "data", tmp_path / "exp", tmp_path / "exp5h"
    for root, shift in ((full, 0), (small, 40)):
        scored(root, data, "fusion_wavlm+hubert_concat_full", 40 + shift)
        scored(root, data, fusion("hubert", "concat"), 30 + shift)  # 10 utterances better
        scored(root, data, "fusion_wavlm+w2v2_concat_full", 40 + shift)
        scored(root, data, fusion("w2v2", "concat"), 39 + shift)  # one utterance better
    t = table(3, [SizeRoot("full", full), SizeRoot("5 h", small)], test_set="test")
    assert t.header == ["Model", "Embeddings", "full", "5 h"]
    assert t.rows == [["WavLM + HuBERT", "fine-tuned (E_ft)", "20.00", "40.00"],
                      ["WavLM + ΔHuBERT", "delta (E_ft − E_pt)", "15.00*", "35.00*"],
                      ["WavLM + W2V2", "fine-tuned (E_ft)", "20.00", "40.00"],
                      ["WavLM + ΔW2V2", "delta (E_ft − E_pt)", "19.50", "39.50"]]
    # relative reductions: 5 / 20 = 25 %, 5 / 40 = 12.5 %, 0.5 / 20 = 2.5 %, 0.5 / 40 = 1.25 %
    assert "HuBERT: full 25.0 %, 5 h 12.5 %; W2V2: full 2.5 %, 5 h 1.2 %" in t.notes[0]


def test_table4_adult_deltas_against_child_deltas(tmp_path):
    data, full = tmp_path / "data", tmp_path / "exp"
    for system, e in {"ft_wavlm": 60, fusion("hubert", "concat"): 40, fusion("hubert", "concat", True): 0,
                      fusion("w2v2", "concat"): 40, fusion("w2v2", "concat", True): 39}.items():
        scored(full, data, system, e)
    t = table(4, [SizeRoot("full", full), SizeRoot("1 h", tmp_path / "none")], test_set="test",
              child_label="MyST", adult_label="LibriSpeech")
    assert t.header == ["Model", "Deltas fine-tuned on", "WER (test)"]  # the full set only
    assert t.rows == [["WavLM (fine-tuned)", "", "30.00"],
                      ["WavLM + ΔHuBERT", "MyST (child)", "20.00"],
                      ["WavLM + ΔHuBERT", "LibriSpeech (adult)", "0.00*"],
                      ["WavLM + ΔW2V2", "MyST (child)", "20.00"],
                      ["WavLM + ΔW2V2", "LibriSpeech (adult)", "19.50"]]


def test_table5_gate_weight_on_the_reference_stream(tmp_path):
    data, full = tmp_path / "data", tmp_path / "exp"
    for system, e in {"ft_wavlm": 40, fusion("hubert", "moe"): 0, fusion("w2v2", "moe"): 39}.items():
        scored(full, data, system, e)
    gates = {fusion("hubert", "moe"): ("hubert", [0.6, 0.8]), fusion("w2v2", "moe"): ("wav2vec2", [0.25, 0.25, 0.25])}
    for system, (other, weights) in gates.items():
        path = full / system / "decode" / "test" / "gate_means.tsv"
        path.write_text(f"utt_id\twavlm\t{other}\n"
                        + "".join(f"utt{k:02d}\t{w:.6f}\t{1 - w:.6f}\n" for k, w in enumerate(weights)))
    t = table(5, [SizeRoot("full", full)], test_set="test", gate_sets=["test"])
    assert t.header == ["Model", "Fusion", "WER (test)", "weight on WavLM E_ft (test)"]
    # HuBERT: mean (0.6 + 0.8) / 2 = 0.7, sample sd sqrt(2 * 0.1^2 / 1) = 0.1414; W2V2: 0.25, sd 0
    assert t.rows == [["WavLM + ΔHuBERT", "MoE", "0.00*", "0.700 ± 0.141"],
                      ["WavLM + ΔW2V2", "MoE", "19.50", "0.250 ± 0.000"]]
    bad = full / fusion("w2v2", "moe") / "decode" / "test" / "gate_means.tsv"
    bad.write_text("utt_id\thubert\twav2vec2\nutt00\t0.5\t0.5\n")
    with pytest.raises(ValueError, match="gate_means.tsv.*no column 'wavlm'"):
        table(5, [SizeRoot("full", full)], test_set="test", gate_sets=["test"])


def test_missing_inputs_are_dashes_and_listed(tmp_path):
    data, full = tmp_path / "data", tmp_path / "exp"
    scored(full, data, "ft_wavlm", 40)
    t = table(4, [SizeRoot("full", full)], test_set="test")
    assert [r[2] for r in t.rows] == ["20.00", "–", "–", "–", "–"]
    runs = {(run, path.parts[-4]) for _, run, path in t.missing}
    assert runs == {("main", fusion("hubert", "concat")), ("main", fusion("w2v2", "concat")),
                    ("adult", fusion("hubert", "concat", True)), ("adult", fusion("w2v2", "concat", True))}
    assert "–: not scored yet" in t.markdown()


def test_replace_sections_keeps_other_content():
    text = "# RESULTS\n\nintro\n\n## WER (%)\n\n|a|\n\n## Table 1: old title\n\nold\n\n## test\n\nrest\n"
    out = replace_sections(text, ["## Table 1: new title\n\nnew\n", "## Table 3: three\n\nthird\n"])
    assert out == ("# RESULTS\n\nintro\n\n## WER (%)\n\n|a|\n\n## Table 1: new title\n\nnew\n\n## test\n\nrest\n"
                   "\n## Table 3: three\n\nthird\n")
    assert replace_sections(out, ["## Table 3: three\n\nthird\n"]) == out  # idempotent
    with pytest.raises(ValueError):
        replace_sections(text, ["Table 2 without a heading"])


def test_cli_writes_sections_lists_missing_and_merges_systems(tmp_path, capsys):
    data, full = tmp_path / "data", tmp_path / "exp"
    scored(full, data, "fusion_wavlm+hubert_concat_full", 40)
    scored(full, data, fusion("hubert", "concat"), 0)
    results = tmp_path / "RESULTS.md"
    results.write_text("# RESULTS\n\n## WER (%)\n\nkept\n")
    out = tmp_path / "paper_tables.md"
    cli.main(["--tables", "3", "--size", f"full={full}", "--out", str(out), "--results_md", str(results)])
    for path in (out, results):
        text = path.read_text()
        assert "## Table 3: " in text and "|WavLM + ΔHuBERT|delta (E_ft − E_pt)|0.00*|" in text
    assert results.read_text().startswith("# RESULTS\n\n## WER (%)\n\nkept\n\n## Table 3: ")
    capsys.readouterr()
    cli.main(["--tables", "3", "--size", f"full={full}", "--list_missing"])
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert {(label, run, Path(p).parts[-4]) for label, run, p in listed} == {
        ("full", "main", "fusion_wavlm+w2v2_concat_full"), ("full", "main", fusion("w2v2", "concat"))}

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "table1_systems.yaml").write_text("a: {fusion: concat, mode: delta, deltas: [hubert]}\n")
    (tmp_path / "conf" / "table3_systems.yaml").write_text("a: {fusion: concat, mode: delta, deltas: [hubert]}\n"
                                                           "b: {fusion: moe, mode: delta, deltas: [hubert]}\n")
    merged = tmp_path / "systems.yaml"
    cli.main(["--tables", "1", "3", "--systems_dir", str(tmp_path / "conf"), "--write_systems", str(merged)])
    assert list(load_yaml(merged)) == ["a", "b"]
    (tmp_path / "conf" / "table3_systems.yaml").write_text("a: {fusion: xattn, mode: delta, deltas: [hubert]}\n")
    with pytest.raises(SystemExit):
        cli.main(["--tables", "1", "3", "--systems_dir", str(tmp_path / "conf"), "--write_systems", str(merged)])


@pytest.mark.parametrize("systems_dir, base", [("egs2/mini_myst/asr1/conf/paper", "egs2/mini_myst/asr1/conf/fusion_systems.yaml"),
                                               ("egs2/myst/asr1/conf/tuning/paper", "egs2/myst/asr1/conf/tuning/fusion_systems.yaml")])
def test_recipe_systems_files_define_what_each_table_reads(tmp_path, systems_dir, base):
    """Each table<N>_systems.yaml trains exactly the fusion systems the table reads from the
    size's main run (table4_adult_systems.yaml: the adult run), defined as the recipe's
    fusion_systems.yaml defines the same names."""
    sizes = [SizeRoot("full", tmp_path / "exp"), SizeRoot("1 h", tmp_path / "exp1h")]
    existing = load_yaml(REPO / base)
    for n in (1, 2, 3, 4, 5):
        t = table(n, sizes, test_set="test", valid_set="dev", gate_sets=["test"])
        for run, name in (("main", f"table{n}_systems.yaml"), ("adult", "table4_adult_systems.yaml")):
            read = {p.parts[-4][len("fusion_"):] for _, r, p in t.missing if r == run and p.parts[-4].startswith("fusion_")}
            if run == "adult" and n != 4:
                assert not read
                continue
            systems = load_yaml(REPO / systems_dir / name)
            assert set(systems) == read, (n, run)
            for key, system in systems.items():
                assert key not in existing or existing[key] == system, key


def test_driver_runs_each_size_once_and_keeps_results_md(tmp_path):
    """local/paper_tables.sh with a stand-in run.sh: one run per size with that size's train set,
    exp dir and feature dir; the subset run's RESULTS.md moves to its exp dir; the tables are
    written; a second call finds everything scored and runs nothing."""
    recipe = tmp_path / "recipe"
    (recipe / "conf" / "paper").mkdir(parents=True)
    for f in (REPO / "egs2/mini_myst/asr1/conf/paper").glob("table*_systems.yaml"):
        (recipe / "conf" / "paper" / f.name).write_text(f.read_text())
    for d in ("data/train", "data/train_3min", "dump/shapes/train_3min", "dump/shapes/libri_train"):
        (recipe / d).mkdir(parents=True)
    (recipe / "data/train/text").write_text("")
    (recipe / "data/train_3min/text").write_text("")
    (recipe / "dump/shapes/train_3min/speech_shape").write_text("")
    (recipe / "dump/shapes/libri_train/speech_shape").write_text("")
    (recipe / "RESULTS.md").write_text("# RESULTS\n\nmain\n")
    (recipe / "run.sh").write_text('#!/usr/bin/env bash\necho "$*" >> calls.log\n'
                                   'case " $* " in *" --exp_dir exp/sizes/"*) echo "# sub" > RESULTS.md ;; esac\n')
    (recipe / "run.sh").chmod(0o755)
    cmd = ["bash", str(REPO / "local/paper_tables.sh"), "--tables", "3", "--sizes", "full 0.05"]
    env = {**os.environ, "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}"}
    subprocess.run(cmd, cwd=recipe, env=env, check=True, capture_output=True, text=True)
    calls = (recipe / "calls.log").read_text().splitlines()
    assert len(calls) == 3  # full: stages 4-7 and 9; 0.05 h: stages 4-9
    assert calls[0].startswith("--stage 4 --stop_stage 7 --fusion_systems exp/paper_systems.yaml")
    assert calls[1].startswith("--stage 9 --stop_stage 9 --fusion_systems exp/paper_systems.yaml")
    assert calls[2].startswith("--stage 4 --stop_stage 9 --train_set train_3min --exp_dir exp/sizes/0.05 "
                               "--feats_dir dump/feats_0.05 --fusion_systems exp/sizes/0.05/paper_systems.yaml "
                               "--adult_train_set  --adult_upstreams  --probe_config ")
    assert set(load_yaml(recipe / "exp/sizes/0.05/paper_systems.yaml")) == {
        "wavlm+dhubert_concat", "wavlm+hubert_concat_full", "wavlm+dw2v2_concat", "wavlm+w2v2_concat_full"}
    assert (recipe / "exp/sizes/0.05/RESULTS.md").read_text() == "# sub\n"
    text = (recipe / "RESULTS.md").read_text()
    assert text.startswith("# RESULTS\n\nmain\n\n## Table 3: ") and "|full|0.05 h|" in text
    assert "## Table 3: " in (recipe / "exp/paper_tables.md").read_text()

    # everything scored: no run.sh call
    data = tmp_path / "data"
    for root in (recipe / "exp", recipe / "exp/sizes/0.05"):
        for system in ("fusion_wavlm+hubert_concat_full", fusion("hubert", "concat"), "fusion_wavlm+w2v2_concat_full",
                       fusion("w2v2", "concat")):
            scored(root, data, system, 40)
    (recipe / "calls.log").unlink()
    subprocess.run(cmd, cwd=recipe, env=env, check=True, capture_output=True, text=True)
    assert not (recipe / "calls.log").exists()
    assert "|WavLM + ΔHuBERT|delta (E_ft − E_pt)|20.00|20.00|" in (recipe / "RESULTS.md").read_text()
