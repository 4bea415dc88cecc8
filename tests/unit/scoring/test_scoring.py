"""Scoring: sclite-compatible counts, trn files, reports, the sclite cross-check,
significance tests, RESULTS.md and the CLI."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import subprocess
from pathlib import Path

import pytest

from espnet_delta.bin import score as score_cli
from espnet_delta.scoring import (
    Counts,
    ScoredUtterance,
    ScoringInputError,
    SctkError,
    SctkMismatchError,
    align_words,
    alignment_ops,
    compare_utterances,
    count_errors,
    find_sctk_tool,
    format_results_md,
    format_summary,
    load_score,
    matched_pairs_test,
    pair_utterances,
    paired_bootstrap,
    parse_sclite_sum,
    parse_trn_line,
    run_mapsswe,
    score,
    speaker_counts,
    sum_avg_line,
    wer_numbers,
    write_results_md,
    write_trn,
)
from espnet_delta.scoring import inputs as scoring_inputs
from espnet_delta.scoring import scorer as scoring_scorer

SCLITE = find_sctk_tool("sclite")
needs_sclite = pytest.mark.skipif(SCLITE is None, reason="SCTK's sclite is not installed (make install adds it)")


def _counts(ref: str, hyp: str) -> tuple[int, int, int, int]:
    c = count_errors(ref.split(), hyp.split())
    return c.correct, c.substitutions, c.deletions, c.insertions


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _utt(utt: str, spk: str, ref: list[str], hyp: list[str]) -> ScoredUtterance:
    return ScoredUtterance.align(utt, spk, ref, hyp)


# --------------------------------------------------------------- alignment


@pytest.mark.parametrize(
    "ref, hyp, expected",
    [
        ("A B C", "A B C", (3, 0, 0, 0)),  # identical
        ("A B C", "", (0, 0, 3, 0)),  # empty hypothesis: all deletions
        ("", "A B", (0, 0, 0, 2)),  # empty reference: all insertions
        ("A B", "X A Y B Z", (2, 0, 0, 3)),  # every extra word an insertion
        ("A B C D", "A X D", (2, 1, 1, 0)),  # substitution + deletion
        ("", "", (0, 0, 0, 0)),
        # sclite's weights (sub 4, ins/del 3) keep the two matches: 3 I + 3 D, weighted cost
        # 6 * 3 = 18, where plain Levenshtein takes 5 substitutions (5 errors, one fewer, but
        # weighted cost 5 * 4 = 20); hand count: insert P Q R, match A B, delete C X Y
        ("A B C X Y", "P Q R A B", (2, 0, 3, 3)),
    ],
)
def test_counts_hand_computed(ref, hyp, expected):
    assert _counts(ref, hyp) == expected


def test_tie_breaking_matches_sclite():
    # equal cost (7): "del A, sub B->C" or "sub A->C, del B"; sclite backtraces
    # from the end preferring the diagonal step, so B->C is the substitution
    assert [op for op, _, _ in align_words(["A", "B"], ["C"])] == ["D", "S"]
    # diagonal vs deletion tie in the last cell (both cost 3): the diagonal (the match) is
    # taken, so the first A is the deleted one (real sclite: "REF: A a / HYP: * a")
    assert [op for op, _, _ in align_words(["A", "A"], ["A"])] == ["D", "C"]
    # deletion vs insertion tie in the last cell: ref A B / hyp B A, cost 6 either way
    # ("del A, B, ins A" or "ins B, A, del B"); the substitution path costs 8. sclite takes
    # the insertion (real sclite: "REF: A b * / HYP: * b A")
    assert [op for op, _, _ in align_words(["A", "B"], ["B", "A"])] == ["D", "C", "I"]
    assert align_words(["A", "B"], ["B", "C"]) == [("D", "A", None), ("C", "B", "B"), ("I", None, "C")]


def test_counts_arithmetic_and_rates():
    c = count_errors(["A", "B", "C", "D"], ["A", "X", "D"]) + count_errors([], ["Q"])
    assert c == Counts(sentences=2, words=4, correct=2, substitutions=1, deletions=1, insertions=1, sentence_errors=2)
    assert c.errors == 3 and c.wer == 75.0 and c.ser == 100.0
    # no reference words: sclite prints 0.0 for every percentage (S.Err aside)
    empty = count_errors([], ["A", "B"])
    assert empty.insertions == 2 and empty.wer == 0.0 and empty.ser == 100.0
    assert wer_numbers(c) == {"Snt": 2, "Wrd": 4, "Corr": 50.0, "Sub": 25.0, "Del": 25.0, "Ins": 25.0,
                              "Err": 75.0, "S.Err": 100.0}


# ------------------------------------------------------------------ inputs


def test_normalisation_applied_to_both_sides(tmp_path):
    ref = _write(tmp_path / "ref", ["s1-u1 Um, the Magnet.", "s1-u2 <NOISE> don’t ((maybe)) STOP"])
    hyp = _write(tmp_path / "hyp", ["s1-u1 the magnet", "s1-u2 Don't stop!"])
    utts = pair_utterances(ref, hyp)
    assert [u.ref for u in utts] == [("THE", "MAGNET"), ("DON'T", "STOP")]
    assert sum((u.counts for u in utts), Counts()).errors == 0


def test_missing_hypothesis_is_empty_with_one_warning(tmp_path, caplog):
    ref = _write(tmp_path / "ref", ["a-1 ONE TWO", "a-2 THREE", "b-1 FOUR FIVE"])
    hyp = _write(tmp_path / "hyp", ["a-1 ONE TWO"])
    with caplog.at_level(logging.WARNING):
        utts = pair_utterances(ref, hyp)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3" in warnings[0].getMessage()
    assert [(u.utt_id, u.hyp, u.counts.deletions) for u in utts] == [("a-1", ("ONE", "TWO"), 0), ("a-2", (), 1),
                                                                    ("b-1", (), 2)]
    # without utt2spk every utterance is its own speaker
    assert [u.spk_id for u in utts] == ["a-1", "a-2", "b-1"]


def test_hypothesis_without_reference_is_an_error(tmp_path):
    ref = _write(tmp_path / "ref", ["a-1 ONE"])
    hyp = _write(tmp_path / "hyp", ["a-1 ONE", "zz-9 EXTRA"])
    with pytest.raises(ScoringInputError, match=r"hyp.*'zz-9'"):
        pair_utterances(ref, hyp)


def test_bad_inputs(tmp_path):
    ref = _write(tmp_path / "ref", ["a-1 ONE", "a-1 TWO"])
    with pytest.raises(ScoringInputError, match=r"ref:2: duplicate id 'a-1'"):
        pair_utterances(ref, ref)
    ref = _write(tmp_path / "ref2", ["a-1 ONE", "a-2 TWO"])
    spk = _write(tmp_path / "utt2spk", ["a-1 a"])
    with pytest.raises(ScoringInputError, match=r"utt2spk: no speaker for utterance 'a-2'"):
        pair_utterances(ref, ref, spk)
    with pytest.raises(ScoringInputError, match="not found"):
        pair_utterances(tmp_path / "nope", ref)


# --------------------------------------------------------------- trn files


def test_trn_format_follows_espnet(tmp_path):
    # asr.sh: paste <(text) <(awk '{ print "(" $2 "-" $1 ")" }' utt2spk)
    utts = [_utt("spk1-u1", "spk1", ["A", "B"], ["A"]), _utt("spk1-u2", "spk1", ["C"], [])]
    write_trn(tmp_path / "ref.trn", utts, "ref")
    write_trn(tmp_path / "hyp.trn", utts, "hyp")
    assert (tmp_path / "ref.trn").read_text() == "A B\t(spk1-spk1-u1)\nC\t(spk1-spk1-u2)\n"
    assert (tmp_path / "hyp.trn").read_text() == "A\t(spk1-spk1-u1)\n\t(spk1-spk1-u2)\n"
    assert parse_trn_line("A B\t(spk1-spk1-u1)\n") == (["A", "B"], "spk1-spk1-u1")
    assert parse_trn_line("\t(x-y)") == ([], "x-y")


# ------------------------------------------------------------------ report


def test_summary_table_and_sum_avg_line():
    utts = [_utt("a-1", "a", ["A", "B", "C", "D"], ["A", "X", "D"]), _utt("a-2", "a", ["A", "B"], ["A", "B"]),
            _utt("b-1", "b", ["X", "Y", "Z"], []), _utt("b-2", "b", [], ["Q", "R"])]
    by_spk = speaker_counts(utts)
    assert list(by_spk) == ["a", "b"]
    line = sum_avg_line(by_spk)
    # ESPnet's show_asr_result.sh: grep Avg, drop "Sum/Avg", squeeze "|" and spaces
    fields = [f for f in re.split(r"[|\s]+", line.replace("Sum/Avg", "")) if f]
    assert fields == ["4", "9", "44.4", "11.1", "44.4", "22.2", "77.8", "75.0"]
    table = format_summary(by_spk)
    assert sum("Avg" in row for row in table.splitlines()) == 1
    assert re.search(r"\|\s+Mean\s+\|\s+2\.0\s+4\.5\s+\|\s+33\.3\s+8\.3\s+58\.3\s+33\.3\s+100\.0\s+75\.0\s+\|", table)
    # a set without reference words: every percentage 0.0 except S.Err (sclite)
    empty = speaker_counts([_utt("c-1", "c", [], ["A"])])
    fields = [f for f in re.split(r"[|\s]+", sum_avg_line(empty).replace("Sum/Avg", "")) if f]
    assert fields == ["1", "0", "0.0", "0.0", "0.0", "0.0", "0.0", "100.0"]
    assert "1*" in format_summary(empty)  # counts instead of percentages, marked


# ------------------------------------------------------ against real sclite


def _random_utterances(seed: int, n: int, vocab: list[str]) -> list[ScoredUtterance]:
    rng = random.Random(seed)
    utts = []
    for k in range(n):
        spk = f"spk{rng.randrange(6)}"
        ref = [rng.choice(vocab) for _ in range(rng.choice([0, 1, 2, 4, 7, 11]))]
        if rng.random() < 0.5:  # a noisy copy of the reference
            hyp = [w if rng.random() > 0.3 else rng.choice(vocab) for w in ref if rng.random() > 0.15]
            hyp[rng.randint(0, len(hyp)):0] = [rng.choice(vocab) for _ in range(rng.randint(0, 2))]
        else:
            hyp = [rng.choice(vocab) for _ in range(rng.randint(0, 9))]
        utts.append(_utt(f"{spk}-{k:04d}", spk, ref, hyp))
    return sorted(utts, key=lambda u: u.utt_id)


def _table_numbers(report: str) -> list[dict[str, list[str]]]:
    """Rows (label -> numbers) of each summary table of a sclite-style report."""
    tables: list[dict[str, list[str]]] = []
    for line in report.splitlines():
        if "SPKR" in line:
            tables.append({})
        elif tables and re.match(r"\s*\|[^-=]", line) and line.count("|") >= 4:
            parts = line.strip().split("|")
            tables[-1][parts[1].strip().replace("Sum/Avg", "Sum")] = (parts[2] + parts[3]).split()
    return tables


@needs_sclite
def test_random_pairs_match_real_sclite(tmp_path):
    # a small vocabulary makes many equal-cost alignments; "ÉTÉ" checks UTF-8 words
    utts = _random_utterances(seed=7, n=400, vocab=["A", "B", "C", "D", "ÉTÉ"])
    write_trn(tmp_path / "ref.trn", utts, "ref")
    write_trn(tmp_path / "hyp.trn", utts, "hyp")
    out = subprocess.run([*SCLITE, "-r", str(tmp_path / "ref.trn"), "trn", "-h", str(tmp_path / "hyp.trn"), "trn",
                          "-i", "rm", "-o", "sum", "rsum", "pralign", "stdout"],
                         capture_output=True, text=True, check=True).stdout
    theirs = dict(re.findall(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+ \d+ \d+ \d+)", out))
    ours = {f"{u.spk_id}-{u.utt_id}": " ".join(map(str, _counts(" ".join(u.ref), " ".join(u.hyp)))) for u in utts}
    assert len(theirs) == len(utts)
    assert ours == theirs  # per-utterance C S D I, ties included
    assert parse_sclite_sum(out) == sum((u.counts for u in utts), Counts())
    # the summary tables too: per-speaker rows, Sum/Avg, Mean / S.D. / Median, rounding
    by_spk = speaker_counts(utts)
    assert sum(c.words == 0 for c in by_spk.values()) <= 1  # sclite mis-shifts with two or more such speakers
    ours_tables = _table_numbers(format_summary(by_spk) + format_summary(by_spk, percent=False))
    assert ours_tables == _table_numbers(out)


@needs_sclite
def test_tables_match_sclite_with_a_speaker_without_words(tmp_path):
    utts = [_utt("a-1", "a", ["A", "B", "C"], ["A", "C"]), _utt("a-2", "a", ["B"], ["B", "B"]),
            _utt("b-1", "b", [], ["X"]), _utt("c-1", "c", ["C", "A"], ["D"])]
    write_trn(tmp_path / "ref.trn", utts, "ref")
    write_trn(tmp_path / "hyp.trn", utts, "hyp")
    out = subprocess.run([*SCLITE, "-r", str(tmp_path / "ref.trn"), "trn", "-h", str(tmp_path / "hyp.trn"), "trn",
                          "-i", "rm", "-o", "sum", "stdout"], capture_output=True, text=True, check=True).stdout
    assert _table_numbers(format_summary(speaker_counts(utts))) == _table_numbers(out)


# ------------------------------------------------------------ score() / CLI


def _test_set(tmp_path: Path) -> tuple[Path, Path]:
    ref = _write(tmp_path / "data" / "test" / "text",
                 ["s1-u1 Um, the Magnet.", "s1-u2 it sticks to iron", "s2-u1 the red ball", "s2-u2 ((hm)) <NOISE>"])
    spk = _write(tmp_path / "data" / "test" / "utt2spk", ["s1-u1 s1", "s1-u2 s1", "s2-u1 s2", "s2-u2 s2"])
    return ref, spk


def test_score_writes_the_score_dir(tmp_path, capsys):
    ref, spk = _test_set(tmp_path)
    hyp = _write(tmp_path / "exp" / "sysA" / "decode_test" / "text",
                 ["s1-u1 the magnet", "s1-u2 it sticks iron", "s2-u2 oh"])
    out_dir = hyp.parent / "score_wer"
    summary = score(ref, hyp, out_dir, utt2spk=spk)
    assert (summary.system, summary.test_set) == ("sysA", "test")
    # s1-u2: one deletion; s2-u1: missing hyp -> 3 deletions; s2-u2: empty ref, 1 insertion
    assert summary.counts == Counts(4, 9, 5, 0, 4, 1, 3)
    assert (out_dir / "hyp.trn").read_text().splitlines()[2] == "\t(s2-s2-u1)"
    text = (out_dir / "result.txt").read_text()
    assert sum("Avg" in line for line in text.splitlines()) == 1
    assert "id: (s1-s1-u2)" in text
    assert summary.sctk_checked == (SCLITE is not None)
    assert (out_dir / "result.sclite.txt").exists() == (SCLITE is not None)
    loaded = load_score(out_dir)
    assert loaded.counts == summary.counts and loaded.utterances == summary.utterances
    assert not list(out_dir.glob(".*tmp"))

    score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--utt2spk", str(spk), "--out_dir", str(out_dir),
                    "--no_sctk"])
    printed = capsys.readouterr().out
    assert "SPKR" in printed and re.search(r"Sum/Avg\s*\|\s+4\s+9\s+\|\s+55\.6", printed)
    assert not (out_dir / "result.sclite.txt").exists()  # stale sclite report removed


@needs_sclite
def test_mismatch_with_sclite_fails_loudly(tmp_path, monkeypatch):
    ref, spk = _test_set(tmp_path)
    hyp = _write(tmp_path / "hyp", ["s1-u1 the magnet", "s1-u2 it sticks iron"])

    def first_match_miscounted(r, h):  # a broken aligner: the first match becomes a substitution
        return alignment_ops(r, h).replace("C", "S", 1)

    monkeypatch.setattr(scoring_inputs, "alignment_ops", first_match_miscounted)
    with pytest.raises(SctkMismatchError, match=r"substitutions: ours 2 vs sclite 0") as err:
        score(ref, hyp, tmp_path / "score", utt2spk=spk, use_sctk=True)
    assert err.value.ours.correct == err.value.sclite.correct - 2
    assert not (tmp_path / "score" / "score.json").exists() and not (tmp_path / "score" / "result.txt").exists()
    # skipping SCTK skips the check
    assert score(ref, hyp, tmp_path / "score2", utt2spk=spk, use_sctk=False).counts.substitutions == 2


def test_require_sctk_without_sctk(tmp_path, monkeypatch):
    ref, spk = _test_set(tmp_path)
    monkeypatch.setattr(scoring_scorer, "find_sctk_tool", lambda name: None)
    with pytest.raises(SctkError, match="not installed"):
        score(ref, ref, tmp_path / "score", use_sctk=True)
    assert not score(ref, ref, tmp_path / "score", use_sctk=None).sctk_checked


def test_parse_sclite_sum():
    report = (
        "        | SPKR | # Snt # Wrd | Corr    Sub    Del    Ins    Err  S.Err |\n"
        "        | Sum  |    4      9 |    4      1      4      2      7      3 |\n"
    )
    assert parse_sclite_sum(report) == Counts(4, 9, 4, 1, 4, 2, 3)
    with pytest.raises(SctkError, match="no 'Sum' row"):
        parse_sclite_sum("| Sum/Avg|    4      9 | 44.4   11.1   44.4   22.2   77.8   75.0 |")


# ------------------------------------------------------------ significance


def test_paired_bootstrap_determinism_and_sanity():
    rng = random.Random(0)
    words = [rng.randint(3, 12) for _ in range(200)]
    errs_a = [rng.randint(0, 2) for _ in words]
    errs_b = [e + rng.randint(1, 3) for e in errs_a]  # much worse everywhere
    same = paired_bootstrap(errs_a, errs_a, words, n_resamples=500, seed=3)
    assert same.p_value == 1.0 and same.delta == 0.0 and same.ci_low == same.ci_high == 0.0
    worse = paired_bootstrap(errs_a, errs_b, words, n_resamples=500, seed=3)
    assert worse.p_value < 0.05 and worse.delta > 0 and worse.ci_low > 0 and worse.prob_b_better == 0.0
    assert paired_bootstrap(errs_a, errs_b, words, n_resamples=500, seed=3) == worse
    assert paired_bootstrap(errs_a, errs_b, words, n_resamples=500, seed=4).ci_low != worse.ci_low
    # a small, noisy difference is not significant
    noisy = [max(0, e + rng.choice([-1, 0, 0, 1])) for e in errs_a]
    assert paired_bootstrap(errs_a, noisy, words, n_resamples=500, seed=3).p_value > 0.05
    assert matched_pairs_test(errs_a, errs_a).p_value == 1.0
    assert matched_pairs_test(errs_a, errs_b).p_value < 0.001 and matched_pairs_test(errs_a, errs_b).z > 0


def test_compare_utterances_checks_the_test_set():
    a = [_utt("x-1", "x", ["A", "B"], ["A"]), _utt("x-2", "x", ["C"], ["C"])]
    b = [_utt("x-2", "x", ["C"], ["D"]), _utt("x-1", "x", ["A", "B"], ["A", "B"])]
    assert compare_utterances(a, b) == ([1, 0], [0, 1], [2, 1])
    with pytest.raises(ScoringInputError, match="different utterances"):
        compare_utterances(a, b[:1])
    with pytest.raises(ScoringInputError, match="different references"):
        compare_utterances(a, [_utt("x-1", "x", ["A"], ["A"]), b[0]])


@needs_sclite
def test_mapsswe_from_sc_stats(tmp_path):
    if find_sctk_tool("sc_stats") is None:
        pytest.skip("sc_stats not installed")
    utts = _random_utterances(seed=1, n=60, vocab=["A", "B", "C", "D", "E", "F"])
    worse = [_utt(u.utt_id, u.spk_id, list(u.ref), list(u.ref[1:]) + ["Z", "Z"]) for u in utts]
    for name, side in (("ref.trn", "ref"), ("a.trn", "ref"), ("b.trn", "hyp")):
        write_trn(tmp_path / name, utts if name != "b.trn" else worse, side)
    result = run_mapsswe(tmp_path / "ref.trn", tmp_path / "a.trn", tmp_path / "b.trn")
    assert result.significant and result.p_value < 0.05 and result.z > 0
    same = run_mapsswe(tmp_path / "ref.trn", tmp_path / "b.trn", tmp_path / "b.trn")
    assert same.p_value == 1.0 and not same.significant


# --------------------------------------------------------------- RESULTS.md


def test_results_md_and_cli(tmp_path, capsys):
    ref, spk = _test_set(tmp_path)
    dirs = []
    for system, lines in (("base", ["s1-u1 the magnet", "s1-u2 it sticks to iron", "s2-u1 the red ball"]),
                          ("worse", ["s1-u1 a magnet", "s1-u2 it sticks", "s2-u1 red"])):
        hyp = _write(tmp_path / "exp" / system / "decode_test" / "text", lines)
        score(ref, hyp, hyp.parent / "score_wer", utt2spk=spk, use_sctk=False)
        dirs.append(hyp.parent / "score_wer")
    md = tmp_path / "RESULTS.md"
    score_cli.main(["--results_md", str(md), "--scored", *map(str, dirs), "--baseline", "base", "--n_resamples", "200"])
    text = md.read_text()
    assert "|system|test|\n|---|---|\n|base|0.0|\n|worse|55.6|" in text
    assert "|system|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|p vs base|" in text
    assert "|base|4|9|100.0|0.0|0.0|0.0|0.0|0.0|-|" in text
    row = re.search(r"^\|worse\|4\|9\|44\.4\|11\.1\|44\.4\|0\.0\|55\.6\|75\.0\|([^|]*)\|$", text, re.M)
    assert row, text
    p_cell = row.group(1)
    assert not list(tmp_path.glob(".RESULTS.md*"))
    with pytest.raises(ScoringInputError, match="scored twice"):
        format_results_md([load_score(dirs[0]), load_score(dirs[0])])
    with pytest.raises(ScoringInputError, match="baseline"):
        write_results_md(md, dirs, baseline="nope")

    out = tmp_path / "cmp.json"
    score_cli.main(["--compare", *map(str, dirs), "--n_resamples", "200", "--out", str(out), "--no_sctk"])
    assert "paired bootstrap (200 resamples, seed 0)" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["bootstrap"]["delta"] == pytest.approx(500 / 9) and "mapsswe" not in result
    # the RESULTS.md p-value: a probability, printed as 0.xxx or <0.001, equal to the one
    # --compare computes with the same resamples and seed. With 200 resamples p = (1 + k) / 201
    # (k resamples as extreme as the observed delta), so it is at least 1/201 > 0.001.
    p = result["bootstrap"]["p_value"]
    assert any(math.isclose(p, (1 + k) / 201) for k in range(201)), p
    assert re.fullmatch(r"<0\.001|[01]\.\d{3}", p_cell), p_cell
    assert p_cell != "<0.001" and 0.0 <= float(p_cell) <= 1.0
    assert float(p_cell) == pytest.approx(p, abs=5e-4)
    # worse is worse on every utterance with reference words: only resamples drawing the
    # empty-reference utterance 4 times (probability 4 ** -4) reach delta <= 0, so p is small
    assert p < 0.05
    with pytest.raises(SystemExit):
        score_cli.main(["--compare", str(dirs[0]), str(tmp_path / "missing")])
