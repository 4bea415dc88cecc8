"""Tables 1-5 of arXiv 2601.20142 from fixture score dirs (espnet_delta/scoring/paper_tables.py,
paper_layout.py, paper_numbers.py, espnet_delta/bin/paper_tables.py, local/paper_tables.sh): the
paper's rows and columns first, added rows after, and the published numbers beside them. The
published values the tests expect are read by hand from the paper's tables in seed 001.

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
from espnet_delta.scoring import paper_numbers as paper
from espnet_delta.scoring.paper_tables import ScoreBook, SizeRoot, build_table, resolve_compare

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


def test_table1_paper_rows_first_then_single_models(tmp_path):
    data, full, small = tmp_path / "data", tmp_path / "exp", tmp_path / "exp1h"
    errors_full = {"ft_wavlm": 40, "ft_hubert": 50, "ft_wav2vec2": 60,
                   fusion("hubert", "weighted"): 39, fusion("hubert", "concat"): 0, fusion("hubert", "xattn"): 80,
                   fusion("w2v2", "weighted"): 40, fusion("w2v2", "concat"): 20, fusion("w2v2", "xattn"): 38}
    for system, e in errors_full.items():
        scored(full, data, system, e)
        scored(small, data, system, min(e + 40, 200))  # 1 h: 20 points worse, one more error everywhere
    t = table(1, [SizeRoot("full", full), SizeRoot("1 h", small)], test_set="test")
    assert t.header == ["FT Embed", "Delta Embed", "Fusion Method", "WER", "Training Size"]  # the paper's columns
    assert t.heading.startswith("## Table 1: ")
    # the paper's rows, in its order (size, then ΔHuBERT / ΔW2V2, then Weighted / X-Attn / Concat);
    # full: e / 2 percent, marked against ft_wavlm (40 errors, one per utterance);
    # 1 h: (e + 40) / 2, ft_wavlm 80 errors (two per utterance): concat ΔHuBERT (one each) marked
    assert t.texts(added=False) == [
        ["WavLM", "ΔHuBERT", "Weighted", "19.50", "full"], ["WavLM", "ΔHuBERT", "X-Attn", "40.00*", "full"],
        ["WavLM", "ΔHuBERT", "Concat", "0.00*", "full"], ["WavLM", "ΔW2V2", "Weighted", "20.00", "full"],
        ["WavLM", "ΔW2V2", "X-Attn", "19.00", "full"], ["WavLM", "ΔW2V2", "Concat", "10.00*", "full"],
        ["WavLM", "ΔHuBERT", "Weighted", "39.50", "1 h"], ["WavLM", "ΔHuBERT", "X-Attn", "60.00*", "1 h"],
        ["WavLM", "ΔHuBERT", "Concat", "20.00*", "1 h"], ["WavLM", "ΔW2V2", "Weighted", "40.00", "1 h"],
        ["WavLM", "ΔW2V2", "X-Attn", "39.00", "1 h"], ["WavLM", "ΔW2V2", "Concat", "30.00*", "1 h"]]
    # added after them: the fine-tuned single models of each size
    assert [(r[0], r[3], r[4]) for r in t.texts(added=True)] == [
        ("WavLM", "20.00", "full"), ("HuBERT", "25.00", "full"), ("W2V2", "30.00", "full"),
        ("WavLM", "40.00", "1 h"), ("HuBERT", "45.00", "1 h"), ("W2V2", "50.00", "1 h")]
    assert [r.added for r in t.rows] == [False] * 12 + [True] * 6
    md = t.markdown("none")
    assert md.index("|WavLM|ΔW2V2|Concat|30.00*|1 h|") < md.index("added (not in the paper)") < md.index("|HuBERT|")
    assert not t.missing


def test_table2_paper_shape_marks_on_fusion_rows_only(tmp_path):
    """Rows WavLM, HuBERT, W2V2, WavLM + ΔHuBERT, WavLM + ΔW2V2 (Concat), a column per size; a
    single model as different from WavLM as a fusion row gets no mark."""
    data, full, small = tmp_path / "data", tmp_path / "exp", tmp_path / "exp5h"
    errors = {"ft_wavlm": 40, "ft_hubert": 0, "ft_wav2vec2": 39, fusion("hubert", "concat"): 0,
              fusion("w2v2", "concat"): 39}
    for system, e in errors.items():
        scored(full, data, system, e)
        scored(small, data, system, e + 40)
    # other methods scored too: Table 2 shows concat whatever the others (no choice on dev)
    scored(full, data, fusion("hubert", "xattn"), 200)
    t = table(2, [SizeRoot("full", full), SizeRoot("5 h", small)], test_set="test")
    assert t.header == ["Model", "full", "5 h"]
    # full: e / 2; 5 h: (e + 40) / 2; ft_hubert and concat ΔHuBERT differ from ft_wavlm in every
    # utterance alike, only the fusion is marked; 39 errors (one utterance) is not significant
    assert t.texts() == [["WavLM", "20.00", "40.00"], ["HuBERT", "0.00", "20.00"], ["W2V2", "19.50", "39.50"],
                         ["WavLM + ΔHuBERT", "0.00*", "20.00*"], ["WavLM + ΔW2V2", "19.50", "39.50"]]
    assert not any(r.added for r in t.rows)
    assert {p.parts[-4] for _, _, p in t.missing} == set()


def test_table3_rows_are_sizes_reductions_added(tmp_path):
    data, full, small = tmp_path / "data", tmp_path / "exp", tmp_path / "exp5h"
    for root, shift in ((full, 0), (small, 40)):
        scored(root, data, "fusion_wavlm+hubert_concat_full", 40 + shift)
        scored(root, data, fusion("hubert", "concat"), 30 + shift)  # 10 utterances better
        scored(root, data, "fusion_wavlm+w2v2_concat_full", 40 + shift)
        scored(root, data, fusion("w2v2", "concat"), 39 + shift)  # one utterance better
    t = table(3, [SizeRoot("full", full), SizeRoot("5 h", small)], test_set="test")
    assert t.header == ["Data", "HuBERT", "ΔHuBERT", "W2V2", "ΔW2V2"]
    assert t.texts(added=False) == [["full", "20.00", "15.00*", "20.00", "19.50"],
                                    ["5 h", "40.00", "35.00*", "40.00", "39.50"]]
    # relative reductions: 5 / 20 = 25 %, 0.5 / 20 = 2.5 %; 5 / 40 = 12.5 %, 0.5 / 40 = 1.25 %
    assert t.texts(added=True) == [["relative WER reduction of Δ, full (%)", "", "25.0", "", "2.5"],
                                   ["relative WER reduction of Δ, 5 h (%)", "", "12.5", "", "1.2"]]


def test_table4_child_and_adult_columns_wavlm_added(tmp_path):
    data, full = tmp_path / "data", tmp_path / "exp"
    for system, e in {"ft_wavlm": 60, fusion("hubert", "concat"): 40, fusion("hubert", "concat", True): 0,
                      fusion("w2v2", "concat"): 40, fusion("w2v2", "concat", True): 39}.items():
        scored(full, data, system, e)
    t = table(4, [SizeRoot("full", full), SizeRoot("1 h", tmp_path / "none")], test_set="test",
              child_label="MyST", adult_label="LibriSpeech")
    assert t.header == ["Fusion (WavLM + Δ)", "MyST", "LibriSpeech"]  # the full set only
    assert t.texts(added=False) == [["HuBERT", "20.00", "0.00*"], ["W2V2", "20.00", "19.50"]]
    assert t.texts(added=True) == [["none (WavLM fine-tuned alone)", "30.00", ""]]


def test_table5_gate_weight_and_wer_columns(tmp_path):
    data, full = tmp_path / "data", tmp_path / "exp"
    for system, e in {"ft_wavlm": 40, fusion("hubert", "moe"): 0, fusion("w2v2", "moe"): 39}.items():
        scored(full, data, system, e)
    gates = {fusion("hubert", "moe"): ("hubert", [0.6, 0.8]), fusion("w2v2", "moe"): ("wav2vec2", [0.25, 0.25, 0.25])}
    for system, (other, weights) in gates.items():
        for gate_set in ("test", "dev"):
            path = full / system / "decode" / gate_set / "gate_means.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"utt_id\twavlm\t{other}\n"
                            + "".join(f"utt{k:02d}\t{w:.6f}\t{1 - w:.6f}\n" for k, w in enumerate(weights)))
    t = table(5, [SizeRoot("full", full)], test_set="test", gate_sets=["dev", "test"])
    assert t.header == ["Fusion Model", "w_ft (test)", "WER", "w_ft (dev, added)"]
    # HuBERT: mean (0.6 + 0.8) / 2 = 0.7, sample sd sqrt(2 * 0.1^2 / 1) = 0.1414; W2V2: 0.25, sd 0
    assert t.texts() == [["WavLM + ΔHuBERT", "0.700 ± 0.141", "0.00*", "0.700 ± 0.141"],
                         ["WavLM + ΔW2V2", "0.250 ± 0.000", "19.50", "0.250 ± 0.000"]]
    bad = full / fusion("w2v2", "moe") / "decode" / "test" / "gate_means.tsv"
    bad.write_text("utt_id\thubert\twav2vec2\nutt00\t0.5\t0.5\n")
    with pytest.raises(ValueError, match="gate_means.tsv.*no column 'wavlm'"):
        table(5, [SizeRoot("full", full)], test_set="test", gate_sets=["test"])


def test_paper_numbers_match_the_seed():
    """Spot checks of espnet_delta/scoring/paper_numbers.py against the tables of arXiv 2601.20142
    as printed in seed 001 (shared/seeds/001_ac27d9f91dd9f5ff.txt), read by hand: Table 1
    (WavLM + Δ, by method and size), Table 2 (its * marks: every ΔW2V2 cell, ΔHuBERT but at
    1 h), Table 3, Table 4 (MyST / Libri) and Table 5 (w_ft, WER)."""
    assert len(paper.TABLE1) == 24 and len(paper.TABLE2) == 20 and len(paper.TABLE3) == 16
    assert paper.TABLE1["hubert", "weighted", "5h"] == 13.65
    assert paper.TABLE1["w2v2", "xattn", "1h"] == 25.97
    assert paper.TABLE1["w2v2", "concat", "full"] == 9.64
    assert paper.TABLE2["hubert", "5h"] == 14.67 and paper.TABLE2["w2v2", "10h"] == 13.47
    assert paper.TABLE2["wavlm", "1h"] == 22.47 and paper.TABLE2["wavlm+dw2v2", "1h"] == 21.81
    assert ("wavlm+dw2v2", "1h") in paper.TABLE2_SIGNIFICANT
    assert ("wavlm+dhubert", "1h") not in paper.TABLE2_SIGNIFICANT
    assert not any(m in ("wavlm", "hubert", "w2v2") for m, _ in paper.TABLE2_SIGNIFICANT)
    assert paper.TABLE3["1h", "wavlm+hubert"] == 25.27 and paper.TABLE3["full", "wavlm+w2v2"] == 9.67
    assert ("full", "wavlm+dw2v2") not in paper.TABLE3_SIGNIFICANT and ("1h", "wavlm+dw2v2") in paper.TABLE3_SIGNIFICANT
    assert paper.TABLE4["hubert", "adult", "full"] == 10.06 and paper.TABLE4["w2v2", "child", "full"] == 9.64
    assert paper.TABLE5["hubert", "w_ft", "full"] == 0.72 and paper.TABLE5["w2v2", "wer", "full"] == 9.70
    # the text's 10 % relative reduction at 1 h for HuBERT: (25.27 - 22.74) / 25.27 = 0.1001
    hubert = paper.TABLE3["1h", "wavlm+hubert"]
    assert (hubert - paper.TABLE3["1h", "wavlm+dhubert"]) / hubert == pytest.approx(0.1001, abs=1e-4)
    # the same fusion is one cell of Tables 1, 2, 3 and 4 (concat, full size)
    assert paper.TABLE1["hubert", "concat", "full"] == paper.TABLE2["wavlm+dhubert", "full"] \
        == paper.TABLE3["full", "wavlm+dhubert"] == paper.TABLE4["hubert", "child", "full"] == 9.71
    assert paper.paper_size("10 h") == "10h" and paper.paper_size("Full") == "full" and paper.paper_size("0.2 h") == ""


def test_cells_mode_shows_paper_value_and_difference(tmp_path):
    """Sizes named as the paper's: each compared cell gets the published value and run minus paper."""
    data, full, small = tmp_path / "data", tmp_path / "exp", tmp_path / "exp1h"
    for system, e in {"ft_wavlm": 40, "ft_hubert": 50, "ft_wav2vec2": 60, fusion("hubert", "concat"): 0}.items():
        scored(full, data, system, e)
    scored(small, data, "ft_wavlm", 20)
    sizes = [SizeRoot("full", full), SizeRoot("1 h", small)]
    assert resolve_compare("auto", sizes) == "cells"
    md = table(2, sizes, test_set="test").markdown(resolve_compare("auto", sizes))
    assert "|Model|full|paper|diff|1 h|paper|diff|" in md
    # WavLM full: 20.00 against 10.16 -> +9.84; 1 h: 10.00 against 22.47 -> -12.47
    assert "|WavLM|20.00|10.16|+9.84|10.00|22.47|-12.47|" in md
    # HuBERT full 25.00 - 11.04 = +13.96; 1 h not scored: the paper's value, no difference
    assert "|HuBERT|25.00|11.04|+13.96|–|25.30||" in md
    # the fusion: 0.00* against the paper's 9.71* -> -9.71; the paper's unmarked 1 h cell 22.74
    assert "|WavLM + ΔHuBERT|0.00*|9.71*|-9.71|–|22.74||" in md
    assert "Not comparable" not in md
    # Table 3's added reduction rows: the paper's own, from its cells: 1 h HuBERT
    # 100 (25.27 - 22.74) / 25.27 = 10.01 %; this run 100 (20 - 0) / 20 = 100.0 %
    scored(small, data, "fusion_wavlm+hubert_concat_full", 40)
    scored(small, data, fusion("hubert", "concat"), 0)
    md3 = table(3, sizes, test_set="test").markdown("cells")
    assert "|relative WER reduction of Δ, 1 h (%)||||100.0|10.01|+89.99|" in md3
    # Table 5: the weight column compared too (three decimals of difference): 0.700 - 0.72 = -0.020
    for system, e in {fusion("hubert", "moe"): 0, fusion("w2v2", "moe"): 39}.items():
        scored(full, data, system, e)
    gates = full / fusion("hubert", "moe") / "decode" / "test" / "gate_means.tsv"
    gates.write_text("utt_id\twavlm\thubert\nutt00\t0.6\t0.4\nutt01\t0.8\t0.2\n")
    md5 = table(5, sizes, test_set="test", gate_sets=["test"]).markdown("cells")
    assert "|Fusion Model|w_ft (test)|paper|diff|WER|paper|diff|" in md5
    # WER 0.00* against 9.83 -> -9.83; W2V2: 19.50 against 9.70 -> +9.80, no gate file
    assert "|WavLM + ΔHuBERT|0.700 ± 0.141|0.72|-0.020|0.00*|9.83|-9.83|" in md5
    assert "|WavLM + ΔW2V2|–|0.65||19.50|9.70|+9.80|" in md5


def test_once_mode_prints_the_paper_table_once_not_comparable(tmp_path):
    """Mini sizes (not the paper's): the published table once below the run's, marked."""
    data, full = tmp_path / "data", tmp_path / "exp"
    scored(full, data, "ft_wavlm", 40)
    sizes = [SizeRoot("full", full), SizeRoot("0.2 h", tmp_path / "exp02")]
    assert resolve_compare("auto", sizes) == "once"
    md = table(2, sizes, test_set="test").markdown("once")
    assert "|Model|full|0.2 h|" in md and "paper|diff" not in md
    run_table, published = md.split("**Not comparable**")
    assert "|WavLM|20.00|–|" in run_table and "10.16" not in run_table
    assert published.count("|WavLM|10.16|11.95|13.27|22.47|") == 1 and md.count("10.16") == 1
    assert "|WavLM + ΔHuBERT|9.71*|11.57*|12.96*|22.74|" in published
    assert "10.16" not in table(2, sizes, test_set="test").markdown("none")
    # the mini recipe asks for this mode itself; the MyST recipe's sizes make auto = cells
    assert "--compare_paper once" in (REPO / "egs2/mini_myst/asr1/paper_tables.sh").read_text()
    assert resolve_compare("auto", [SizeRoot(lab, tmp_path) for lab in ("full", "10 h", "5 h", "1 h")]) == "cells"


def test_missing_inputs_are_dashes_and_listed(tmp_path):
    data, full = tmp_path / "data", tmp_path / "exp"
    scored(full, data, "ft_wavlm", 40)
    t = table(4, [SizeRoot("full", full)], test_set="test")
    assert t.texts() == [["HuBERT", "–", "–"], ["W2V2", "–", "–"], ["none (WavLM fine-tuned alone)", "20.00", ""]]
    runs = {(run, path.parts[-4]) for _, run, path in t.missing}
    assert runs == {("main", fusion("hubert", "concat")), ("main", fusion("w2v2", "concat")),
                    ("adult", fusion("hubert", "concat", True)), ("adult", fusion("w2v2", "concat", True))}
    assert "–: not scored yet" in t.markdown("none")


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
    for path in (out, results):  # size "full" is the paper's: auto = per-cell comparison
        text = path.read_text()
        assert "## Table 3: " in text and "|full|20.00|10.35|+9.65|0.00*|9.71*|-9.71|–|9.67||–|9.64||" in text
    assert results.read_text().startswith("# RESULTS\n\n## WER (%)\n\nkept\n\n## Table 3: ")
    cli.main(["--tables", "3", "--size", f"full={full}", "--out", str(out), "--compare_paper", "once"])
    text = out.read_text()
    assert "|full|20.00|0.00*|–|–|" in text and text.count("**Not comparable**") == 1
    assert text.count("|Full|10.35|9.71*|9.67|9.64|") == 1 and text.count("## Table 3: ") == 1
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
        t = table(n, sizes, test_set="test", gate_sets=["test"])
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
    assert text.startswith("# RESULTS\n\nmain\n\n## Table 3: ") and "|Data|HuBERT|ΔHuBERT|W2V2|ΔW2V2|" in text
    assert "|0.05 h|–|–|–|–|" in text and "**Not comparable**" in text  # 0.05 h is not a paper size: auto = once
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
    assert "|0.05 h|20.00|20.00|20.00|20.00|" in (recipe / "RESULTS.md").read_text()


def test_a_size_the_training_set_cannot_hold_stops_after_stage_1_in_one_line(tmp_path):
    """The subset writer skips a size larger than data/train: the driver stops after its stage 1 with one
    error naming the size and the subset dir, before any training (stand-in run.sh writes no subset)."""
    recipe = tmp_path / "recipe"
    (recipe / "conf" / "paper").mkdir(parents=True)
    for f in (REPO / "egs2/mini_myst/asr1/conf/paper").glob("table*_systems.yaml"):
        (recipe / "conf" / "paper" / f.name).write_text(f.read_text())
    (recipe / "data/train").mkdir(parents=True)
    (recipe / "data/train/text").write_text("")
    (recipe / "run.sh").write_text('#!/usr/bin/env bash\necho "$*" >> calls.log\n')
    (recipe / "run.sh").chmod(0o755)
    env = {**os.environ, "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "local/paper_tables.sh"), "--tables", "3", "--sizes", "full 0.05"],
                          cwd=recipe, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "size 0.05 h: data/train_3min was not written" in errors[0], errors
    calls = (recipe / "calls.log").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("--stage 1 --stop_stage 3")  # stage 1 ran, no training
