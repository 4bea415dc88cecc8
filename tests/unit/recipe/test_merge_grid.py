"""Stage 8's dev grids: every method tuned on dev (constructed scores), the chosen points
decoded on every set, the reports; the decoder is replaced by a table of fake WERs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import yaml

from espnet_delta.recipe import merge_grid as g
from espnet_delta.recipe import merge_stage


def lerp_grid(wers: List[float]) -> List[Tuple[g.GridPoint, float]]:
    points = [p for p in g.baseline_points() if p.method == "lerp"]
    assert [p.params for p in points] == [f"c={c:g}" for c in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
    return list(zip(points, wers))


def test_selection_picks_the_dev_best_point():
    scored = lerp_grid([30.1, 25.0, 22.5, 22.5, 24.0, 40.0, 23.0, 50.0, 60.0])
    point, wer = g.select_best(scored)
    assert (point.name, wer) == ("lerp_c0.3", 22.5)  # the first of the two 22.5
    assert point.config.model_coefs(2) == [0.3]
    scored = lerp_grid([float("nan"), 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 24.5])
    assert g.select_best(scored)[0].name == "lerp_c0.9"  # nothing scored (NaN) is never chosen
    with pytest.raises(ValueError):
        g.select_best([])


def test_default_grids_have_nine_points_per_method():
    assert g.DEFAULT_SCHEDULES == ("depth_power", "linear_exponent", "adult_power")
    points = g.sa_points(g.DEFAULT_SCHEDULES, [0.1, 0.2, 0.3], [0.7, 0.8, 0.9]) + g.baseline_points()
    sizes = {}
    for p in points:
        sizes[p.method, p.reading] = sizes.get((p.method, p.reading), 0) + 1
    assert sizes == {("sa", "depth_power"): 9, ("sa", "linear_exponent"): 9, ("sa", "adult_power"): 9,
                     ("lerp", "lerp"): 9, ("ta", "ta"): 9, ("ties", "ties"): 9}  # fmt: skip
    adult = [p for p in points if p.reading == "adult_power"]
    assert [p.name for p in adult] == [f"sa_adult_power_l{lam}_a{a}" for lam in ("0.1", "0.2", "0.3")
                                       for a in ("0.7", "0.8", "0.9")]  # fmt: skip
    assert adult[4].config.sa_schedule().kind == "adult_power" and adult[4].params == "lambda=0.2 alpha=0.8"
    g.check_unique(points)
    ties = [p for p in points if p.method == "ties"]
    assert {(p.config.ties_topk, p.config.ties_scale) for p in ties} == {
        (k, s) for k in (10.0, 20.0, 50.0) for s in (0.5, 1.0, 1.5)
    }
    ta = [p for p in points if p.method == "ta"]
    assert [p.config.model_coefs(2) for p in ta][0] == [0.2, 0.2]  # one scale on both task vectors
    sa = next(p for p in points if p.name == "sa_linear_exponent_l0.2_a0.8")
    assert (sa.config.schedule, sa.config.sa_lambda, sa.config.sa_alpha) == ("linear_exponent", 0.2, 0.8)


def test_grid_tsv_and_results_md():
    scored = lerp_grid([30.0, 20.0, 25.0, 26.0, 27.0, 28.0, 29.0, 31.0, 32.0])
    sa = g.sa_points(["depth_power", "linear_exponent"], [0.2], [0.8, 0.9])
    scored += list(zip(sa, [18.0, 17.5, 19.0, 16.0]))
    tsv = g.grid_tsv(scored, "dev").splitlines()
    assert tsv[0] == "method\treading\tname\tparams\tdev_wer\tchosen"
    chosen = [row.split("\t")[2] for row in tsv[1:] if row.endswith("\t*")]
    assert chosen == ["lerp_c0.2", "sa_linear_exponent_l0.2_a0.9"]
    assert tsv[-2:] == ["# best lerp: lerp_c0.2", "# best sa: sa_linear_exponent_l0.2_a0.9"]
    md = g.results_md(scored, {"merge_lerp_c0.2": {"dev": 20.0, "test": 21.25}}, "dev", ["test"])
    assert "|lerp|9|merge_lerp_c0.2|c=0.2|20.00|21.25|" in md
    assert "|sa|4|merge_sa_linear_exponent_l0.2_a0.9|lambda=0.2 alpha=0.9|-|-|" in md
    assert "|depth_power|2|lambda=0.2 alpha=0.9|17.50|" in md and "|linear_exponent|2|lambda=0.2 alpha=0.9|16.00|" in md


def test_engine_default_searches_every_formula_reading():
    """local/asr.sh's --merge_schedules default (stage 8, SSL and Whisper merges) lists all three readings."""
    text = (Path(__file__).resolve().parents[3] / "local" / "asr.sh").read_text()
    default = re.search(r'^merge_schedules="([^"]*)"', text, re.M).group(1).split()
    assert default == list(g.DEFAULT_SCHEDULES)


# --------------------------------------------------------------------------- the stage with a fake decoder
def fairseq_state(seed: int) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {"label_embs_concat": torch.randn(2, 3, generator=gen)}
    for i in range(2):
        for proj in ("q_proj", "k_proj", "v_proj"):
            state[f"encoder.layers.{i}.self_attn.{proj}.weight"] = torch.randn(3, 3, generator=gen)
        state[f"encoder.layers.{i}.fc1.weight"] = torch.randn(3, 3, generator=gen)
    return state


def job(path: Path, seed: int) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    torch.save(fairseq_state(seed), path / merge_stage.MODEL_NAME)
    return path


DEV_WER = {"sa_depth_power_l0.2_a0.8": 14.0, "sa_depth_power_l0.2_a0.9": 12.0, "sa_groups": 12.0,
           "lerp_c0.3": 15.0, "lerp_c0.7": 13.0, "ta_s0.5": 16.0, "ta_s1": 16.0,
           "ties_k20_s0.5": 18.0, "ties_k20_s1": 17.0}  # fmt: skip
INPUT_WER = {"ft_child": 10.0, "ft_adult": 40.0}  # the two merged models (decoded by the stage too)


@pytest.fixture
def fake_decoder(monkeypatch):
    """decode_and_score writing hypotheses once per job and set; WERs from DEV_WER (dev) or 20 + k."""
    decoded = []

    def fake(job_dir: Path, sets, data_dir, batch_size, device, model_name=merge_stage.MODEL_NAME, decode_config=None):
        wers = {}
        for name, _ in sets:
            hyp = job_dir / "decode" / name / "text"
            if not hyp.is_file():
                assert (job_dir / model_name).is_file(), f"decoding {job_dir} without a model"
                hyp.parent.mkdir(parents=True, exist_ok=True)
                hyp.write_text(f"{job_dir.name}\n")
                decoded.append((job_dir.name, name))
            point = job_dir.name
            for prefix in ("merge_whisper_", "merge_"):
                if point.startswith(prefix):
                    point = point[len(prefix):]
                    break
            dev = INPUT_WER.get(point) or DEV_WER[point]
            wers[name] = dev if name == "dev" else 20.0 + dev
        return wers

    monkeypatch.setattr(merge_stage, "decode_and_score", fake)
    return decoded


def test_stage_tunes_every_method_on_dev_and_decodes_the_chosen(tmp_path, fake_decoder, monkeypatch):
    child, adult = job(tmp_path / "exp" / "ft_child", 1), job(tmp_path / "exp" / "ft_adult", 2)
    torch.save(fairseq_state(0), tmp_path / "base.pth")
    (tmp_path / "groups.yaml").write_text("- layers: [0, 0]\n  lambda: 0.3\n  alpha: 0.7\n")
    exp = tmp_path / "exp"
    argv = ["--child", str(child), "--adult", str(adult), "--base", str(tmp_path / "base.pth"),
            "--data_dir", str(tmp_path / "data"), "--valid_set", "dev", "--test_sets", "test", "--exp_dir", str(exp),
            "--schedules", "depth_power", str(tmp_path / "groups.yaml"), "--lambdas", "0.2", "--alphas", "0.8", "0.9",
            "--lerp_coefs", "0.3", "0.7", "--ta_scales", "0.5", "1", "--ties_topks", "20", "--ties_scales", "0.5", "1"]  # fmt: skip
    merge_stage.main(argv)

    rows = [r.split("\t") for r in (exp / "merge_grid.tsv").read_text().splitlines()[1:] if not r.startswith("#")]
    assert [r[2] for r in rows] == list(DEV_WER)
    assert {r[2] for r in rows if r[5] == "*"} == {"sa_depth_power_l0.2_a0.9", "lerp_c0.7", "ta_s0.5", "ties_k20_s1"}
    # the grid was decoded on dev only, the chosen points on test (their dev hypotheses copied, not decoded
    # again), the two merged models on every set
    assert sorted(fake_decoder) == sorted([(n, "dev") for n in DEV_WER] + [
        (f"merge_{n}", "test") for n in ("sa_depth_power_l0.2_a0.9", "lerp_c0.7", "ta_s0.5", "ties_k20_s1")]
        + [(n, s) for n in INPUT_WER for s in ("dev", "test")])  # fmt: skip
    assert not list((exp / "merge_grid").glob(f"*/{merge_stage.MODEL_NAME}"))  # grid models deleted
    sa = exp / "merge_sa_depth_power_l0.2_a0.9"
    assert (sa / "config.yaml").read_text() == (child / "config.yaml").read_text()
    assert (sa / "merge_schedule.tsv").is_file() and (exp / "merge_grid" / "sa_groups" / "merge_schedule.tsv").is_file()
    merged = torch.load(sa / merge_stage.MODEL_NAME, weights_only=True)
    m1, m2, b = fairseq_state(1), fairseq_state(2), fairseq_state(0)
    key = "encoder.layers.1.self_attn.k_proj.weight"  # top layer: c = lambda
    torch.testing.assert_close(merged[key], b[key] + 0.2 * (m1[key] - b[key]) + 0.8 * (m2[key] - b[key]))
    lerp = torch.load(exp / "merge_lerp_c0.7" / merge_stage.MODEL_NAME, weights_only=True)
    torch.testing.assert_close(lerp["encoder.layers.0.fc1.weight"], 0.7 * m1["encoder.layers.0.fc1.weight"]
                               + 0.3 * m2["encoder.layers.0.fc1.weight"])  # fmt: skip
    assert g.chosen_job(exp, "sa") == "merge_sa_depth_power_l0.2_a0.9" and g.chosen_job(exp, "ta") == "merge_ta_s0.5"
    assert g.chosen_job(exp, "transfer") is None and g.chosen_job(tmp_path, "sa") is None
    md = (exp / "merge_results.md").read_text()
    assert "|lerp|2|merge_lerp_c0.7|c=0.7|13.00|33.00|" in md
    assert "|sa|3|merge_sa_depth_power_l0.2_a0.9|lambda=0.2 alpha=0.9|12.00|32.00|" in md
    assert f"|{tmp_path / 'groups.yaml'}|1|file {tmp_path / 'groups.yaml'}|12.00|" in md
    assert "|child model (M1)|-|ft_child|-|10.00|30.00|" in md and "|adult model (M2)|-|ft_adult|-|40.00|60.00|" in md
    # task vector norms, by hand from fairseq_state: SA = the 6 Q/K/V tensors, all = all 9 (8 of 3 x 3, 1 of 2 x 3)
    b = fairseq_state(0)
    for job_name, seed in (("ft_child", 1), ("ft_adult", 2)):
        m = fairseq_state(seed)
        ratio = {sub: (sum(float((m[k] - b[k]).pow(2).sum()) for k in keys) /
                       sum(float(b[k].pow(2).sum()) for k in keys)) ** 0.5
                 for sub, keys in (("sa", [k for k in b if "_proj" in k]), ("all", list(b)))}
        role = "child model (M1)" if seed == 1 else "adult model (M2)"
        assert f"|{job_name}|{role}|{ratio['sa']:.3g}|{ratio['all']:.3g}|" in md
    assert "(6 tensors)" in md and "(9 tensors" in md

    # a rerun merges and decodes nothing again, and writes the same reports
    before = {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()}
    fake_decoder.clear()
    monkeypatch.setattr("espnet_delta.merge.merge_files", lambda *a, **k: pytest.fail("merged again"))
    merge_stage.main(argv)
    assert fake_decoder == []
    assert {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()} == before


def test_named_stage_writes_its_own_grid_jobs_and_section(tmp_path, fake_decoder):
    """--name whisper keeps the Whisper merges apart from the SSL ones (merge_whisper_*)."""
    child, adult = job(tmp_path / "exp" / "ft_child", 1), job(tmp_path / "exp" / "ft_adult", 2)
    torch.save(fairseq_state(0), tmp_path / "base.pth")
    exp = tmp_path / "exp"
    merge_stage.main(["--child", str(child), "--adult", str(adult), "--base", str(tmp_path / "base.pth"),
                      "--data_dir", str(tmp_path / "data"), "--valid_set", "dev", "--test_sets", "test",
                      "--exp_dir", str(exp), "--name", "whisper", "--methods", "sa", "lerp",
                      "--schedules", "depth_power", "--lambdas", "0.2", "--alphas", "0.8", "0.9",
                      "--lerp_coefs", "0.3", "0.7"])  # fmt: skip
    assert not (exp / "merge_grid.tsv").exists() and not (exp / "merge_results.md").exists()
    assert (exp / "merge_whisper_grid.tsv").is_file() and (exp / "merge_whisper_grid" / "lerp_c0.3" / "decode").is_dir()
    assert g.chosen_job(exp, "lerp", prefix="merge_whisper") == "merge_whisper_lerp_c0.7"
    assert (exp / "merge_whisper_lerp_c0.7" / merge_stage.MODEL_NAME).is_file()
    md = (exp / "merge_whisper_results.md").read_text()
    assert md.startswith("## Model merging (whisper)") and "|lerp|2|merge_whisper_lerp_c0.7|c=0.7|13.00|33.00|" in md


def test_stage_refuses_a_bad_schedule_file_before_merging(tmp_path, fake_decoder, caplog):
    child, adult = job(tmp_path / "c", 1), job(tmp_path / "a", 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- layers: [0, 1]\n  lambda: 0.3\n")
    with pytest.raises(SystemExit) as err:  # one ERROR line (espnet_delta.cli.run_command), no traceback
        merge_stage.main(["--child", str(child), "--adult", str(adult), "--base", str(tmp_path / "c" / merge_stage.MODEL_NAME),
                          "--data_dir", "data", "--exp_dir", str(tmp_path / "exp"), "--schedules", str(bad)])  # fmt: skip
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert err.value.code == 1 and str(bad) in error and "missing 'alpha'" in error and fake_decoder == []
    assert not (tmp_path / "exp").exists()


def test_stage_searches_the_adult_power_reading(tmp_path, fake_decoder, monkeypatch):
    """adult_power points get their own jobs; chosen, the merge has c_i = 1 - lambda^(alpha^i)."""
    monkeypatch.setitem(DEV_WER, "sa_adult_power_l0.2_a0.8", 11.0)
    child, adult = job(tmp_path / "exp" / "ft_child", 1), job(tmp_path / "exp" / "ft_adult", 2)
    torch.save(fairseq_state(0), tmp_path / "base.pth")
    exp = tmp_path / "exp"
    merge_stage.main(["--child", str(child), "--adult", str(adult), "--base", str(tmp_path / "base.pth"),
                      "--data_dir", str(tmp_path / "data"), "--valid_set", "dev", "--test_sets", "test",
                      "--exp_dir", str(exp), "--methods", "sa", "--schedules", "depth_power", "adult_power",
                      "--lambdas", "0.2", "--alphas", "0.8"])  # fmt: skip
    rows = [r.split("\t") for r in (exp / "merge_grid.tsv").read_text().splitlines()[1:] if not r.startswith("#")]
    assert [(r[1], r[2], r[5]) for r in rows] == [("depth_power", "sa_depth_power_l0.2_a0.8", ""),
                                                  ("adult_power", "sa_adult_power_l0.2_a0.8", "*")]  # fmt: skip
    assert g.chosen_job(exp, "sa") == "merge_sa_adult_power_l0.2_a0.8"
    assert "|adult_power|1|lambda=0.2 alpha=0.8|11.00|" in (exp / "merge_results.md").read_text()
    merged = torch.load(exp / "merge_sa_adult_power_l0.2_a0.8" / merge_stage.MODEL_NAME, weights_only=True)
    m1, m2, b = fairseq_state(1), fairseq_state(2), fairseq_state(0)
    # layer 0: 1 - 0.2^1 = 0.8; layer 1: 1 - 0.2^0.8 = 1 - 0.275945932292242966 (`bc -l`: e(0.8*l(0.2)))
    for layer, c in ((0, 0.8), (1, 0.724054067707757034)):
        key = f"encoder.layers.{layer}.self_attn.q_proj.weight"
        torch.testing.assert_close(merged[key], b[key] + c * (m1[key] - b[key]) + (1 - c) * (m2[key] - b[key]))
    assert torch.equal(merged["encoder.layers.0.fc1.weight"], m1["encoder.layers.0.fc1.weight"])
