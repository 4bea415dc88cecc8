"""RESULTS.md over training seeds (espnet_delta.scoring.seeds): mean and sample standard deviation
of each system's error rate over the seeds, each seed's value, and the paired bootstrap that pools
the seeds (per resample of utterances, the per-seed differences summed over the seeds).

Test set: four utterances of five one-letter words (20 words; 36 character tokens: 5 letters
and 4 ``<space>`` per utterance). Every error below is one substituted word, i.e. one substituted
character, so WER = subs / 20 and CER = subs / 36, counted by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from espnet_delta.bin import score as score_cli
from espnet_delta.scoring import load_score, score
from espnet_delta.scoring.inputs import ScoredUtterance
from espnet_delta.scoring.results import write_results_md
from espnet_delta.scoring.seeds import format_seeds_md, mean_std, pooled_bootstrap

REFS = ["u1 A B C D E", "u2 F G H I J", "u3 K L M N O", "u4 P Q R S T"]
N_RESAMPLES = 200


def hyps(subs_per_utt: int) -> list:
    """Each utterance with its first ``subs_per_utt`` words replaced by Z."""
    out = []
    for line in REFS:
        utt, *words = line.split()
        out.append(" ".join([utt] + ["Z"] * subs_per_utt + words[subs_per_utt:]))
    return out


def write(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


#: training seed -> system -> substituted words per utterance. The baseline makes 1, 2, 3 errors per
#: utterance on seeds 0, 1, 2 (WER 20, 40, 60 %); "same" equals it everywhere; "better" is right
#: on every utterance of every seed.
SUBS = {0: {"ft_base": 1, "same": 1, "better": 0},
        1: {"ft_base": 2, "same": 2, "better": 0},
        2: {"ft_base": 3, "same": 3, "better": 0}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """seed -> exp dir holding <system>/decode/test/score_wer (seed 0: exp, seed k: exp/seed<k>)."""
    root = tmp_path_factory.mktemp("seeds")
    ref = write(root / "data" / "test" / "text", REFS)
    exps = {}
    for seed, systems in SUBS.items():
        exp = root / "exp" / (f"seed{seed}" if seed else "")
        for system, subs in systems.items():
            job = exp / system / "decode" / "test"
            score(ref, write(job / "text", hyps(subs)), job / "score_wer", use_sctk=False, system=system,
                  test_set="test")
        exps[seed] = exp
    return exps


def section_rows(text: str) -> dict:
    """(unit, system) -> cells of the seeds section's tables."""
    body = text.split("## Seeds:", 1)[1]
    rows, unit = {}, None
    for line in body.splitlines():
        if line.startswith("### "):
            unit = line.split()[1]
        elif line.startswith("|") and not line.startswith(("|system", "|---")):
            cells = line.strip("|").split("|")
            rows[(unit, cells[0])] = cells[1:]
    return rows


def test_mean_and_sample_std_by_hand():
    # 20, 40, 60: mean 40; squared deviations 400 + 0 + 400 over n - 1 = 2: variance 400, std 20
    assert mean_std([20.0, 40.0, 60.0]) == pytest.approx((40.0, 20.0))
    mean, std = mean_std([12.5])
    assert mean == 12.5 and math.isnan(std)  # one seed: no spread


def utts(errors_per_utt: list) -> list:
    """Utterances of REFS with the given numbers of substituted words."""
    out = []
    for line, k in zip(REFS, errors_per_utt):
        utt, *words = line.split()
        out.append(ScoredUtterance.align(utt, utt, words, ["Z"] * k + words[k:]))
    return out


def test_pooled_bootstrap_sums_the_seeds():
    base = [utts([1, 1, 1, 1]), utts([2, 2, 2, 2])]
    # identical to the baseline on every seed: difference 0 on every resample, p = 1
    same = pooled_bootstrap([(b, b) for b in base], n_resamples=N_RESAMPLES)
    assert same.delta == 0.0 and same.p_value == 1.0
    # gains 1 word per utterance on seed 0 and loses 1 on seed 1: the sum over seeds is 0 on every
    # utterance, so every resample's pooled difference is 0 (a per-seed test would find both significant)
    mixed = pooled_bootstrap([(base[0], utts([0, 0, 0, 0])), (base[1], utts([3, 3, 3, 3]))], n_resamples=N_RESAMPLES)
    assert mixed.delta == 0.0 and mixed.p_value == 1.0
    # better by 1 word on every utterance of both seeds: delta = mean over seeds of -4/20 = -20 points on
    # every resample; none is as extreme as "no difference": p = 1 / (1 + 200)
    better = pooled_bootstrap([(base[0], utts([0, 0, 0, 0])), (base[1], utts([1, 1, 1, 1]))], n_resamples=N_RESAMPLES)
    assert better.delta == pytest.approx(-20.0)
    assert better.wer_a == pytest.approx((20.0 + 40.0) / 2) and better.wer_b == pytest.approx((0.0 + 20.0) / 2)
    assert better.p_value == pytest.approx(1 / (1 + N_RESAMPLES)) and better.p_value < 0.05


def test_results_md_section_over_three_seeds(runs, tmp_path):
    out = tmp_path / "RESULTS.md"
    seed0 = sorted(runs[0].glob("*/decode/test/score_wer"))
    score_cli.main(["--results_md", str(out), "--scored", *map(str, seed0), "--baseline", "ft_base",
                    "--n_resamples", str(N_RESAMPLES), "--seed_runs", *(f"{k}={d}" for k, d in runs.items())])
    text = out.read_text()
    assert "## Seeds: mean and spread over 3 training seeds (0, 1, 2)" in text
    rows = section_rows(text)
    # cells: test set, mean, std, seed 0, seed 1, seed 2, mean delta, p
    # baseline WER 20, 40, 60 (4, 8, 12 of 20 words): mean 40, std 20
    assert rows[("WER", "ft_base")] == ["test", "40.0", "20.0", "20.0", "40.0", "60.0", "-", "-"]
    # CER: 4, 8, 12 of 36 tokens = 11.11, 22.22, 33.33 %: mean 22.22, std 11.11
    assert rows[("CER", "ft_base")] == ["test", "22.2", "11.1", "11.1", "22.2", "33.3", "-", "-"]
    assert rows[("WER", "same")][-2:] == ["+0.0", "1.000"]
    # better: 0 % on every seed; mean delta -40; p = 1/(1 + 200) = 0.00498
    assert rows[("WER", "better")] == ["test", "0.0", "0.0", "0.0", "0.0", "0.0", "-40.0", "0.005"]
    assert rows[("CER", "better")][-2:] == ["-22.2", "0.005"]


def test_one_seed_leaves_results_md_unchanged(runs, tmp_path):
    dirs = sorted(runs[0].glob("*/decode/test/score_wer"))
    env = {"date": "fixed"}
    plain = write_results_md(tmp_path / "a.md", dirs, "ft_base", N_RESAMPLES, environment=env).read_bytes()
    one = format_seeds_md({0: [load_score(d) for d in dirs]}, "ft_base", N_RESAMPLES)
    assert one == ""
    assert write_results_md(tmp_path / "b.md", dirs, "ft_base", N_RESAMPLES, environment=env,
                            sections=[one]).read_bytes() == plain
    assert "## Seeds:" not in plain.decode()


def test_a_seed_without_a_system_shows_a_dash(runs):
    summaries = {k: [load_score(d) for d in sorted(exp.glob("*/decode/test/score_wer"))] for k, exp in runs.items()}
    summaries[1] = [s for s in summaries[1] if s.system != "better"]
    rows = section_rows(format_seeds_md(summaries, "ft_base", N_RESAMPLES))
    # seeds 0 and 2 only: 0 % both; baseline 20 and 60 on those seeds: mean delta -40
    assert rows[("WER", "better")] == ["test", "0.0", "0.0", "0.0", "-", "0.0", "-40.0", "0.005"]


def test_each_seeds_chosen_merge_point_is_one_row_per_method(runs):
    """Stage 8 names a merge after its dev-chosen grid point; seeds choose different points."""
    import dataclasses

    summaries = {k: [load_score(d) for d in sorted(exp.glob("*/decode/test/score_wer"))] for k, exp in runs.items()}
    points = {0: "merge_sa_adult_power_l0.1_a0.9", 1: "merge_sa_depth_power_l0.3_a0.7", 2: "merge_sa_adult_power_l0.3_a0.9"}
    for k, point in points.items():  # the "better" system plays seed k's chosen SA merge
        summaries[k] = [dataclasses.replace(s, system=point) if s.system == "better" else s for s in summaries[k]]
    rows = section_rows(format_seeds_md(summaries, "ft_base", N_RESAMPLES))
    # one row for the method over all three seeds: 0 % on each, baseline 20/40/60: mean delta -40
    assert rows[("WER", "merge_sa*")] == ["test", "0.0", "0.0", "0.0", "0.0", "0.0", "-40.0", "0.005"]
    assert not any(name.startswith("merge_sa_") for _, name in rows)
    assert rows[("WER", "same")][0] == "test"  # other systems keep their names
