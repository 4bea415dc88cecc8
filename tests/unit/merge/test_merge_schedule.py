"""SA merge schedules as data: the three formulas, the authors' layer groups, explicit c_i.

Every expected c_i below is written out as a number computed by hand with `bc -l`
(e(x * l(0.3)) = 0.3^x), never with the code under test.
"""

from __future__ import annotations

import logging
import re
from typing import Dict

import pytest
import torch

from espnet_delta.bin import merge as merge_cli
from espnet_delta.merge import (
    LayerGroup,
    MergeConfig,
    Schedule,
    ScheduleError,
    from_object,
    layer_coefficients,
    load_schedule,
    merge,
    merge_files,
)

# L = 4, lambda = 0.3, alpha = 0.7:
#   depth_power     0.3^(0.7^(3-i)): exponents 0.343, 0.49, 0.7, 1
DEPTH_POWER_L4 = [0.661686981895412, 0.554356845513105, 0.430511620249934, 0.3]
#   linear_exponent 0.3^(0.7*i):     exponents 0, 0.7, 1.4, 2.1
LINEAR_EXPONENT_L4 = [1.0, 0.430511620249934, 0.185340255170224, 0.079791133550869]
# groups: c = lambda^alpha
C_03_05 = 0.547722557505166  # 0.3^0.5
C_03_09 = 0.338383461901650  # 0.3^0.9
C_03_07 = 0.430511620249934  # 0.3^0.7


def test_formulas_at_4_layers():
    assert layer_coefficients(4, 0.3, 0.7, "depth_power") == pytest.approx(DEPTH_POWER_L4, abs=1e-12)
    assert layer_coefficients(4, 0.3, 0.7, "linear_exponent") == pytest.approx(LINEAR_EXPONENT_L4, abs=1e-12)
    plan = Schedule.formula("linear_exponent", 0.3, 0.7).plan({"encoder": 4, "decoder": 2})
    assert plan.tables == {"encoder": pytest.approx(LINEAR_EXPONENT_L4, abs=1e-12), "decoder": pytest.approx([1.0, C_03_07])}


def test_the_formula_readings_at_24_layers():
    """docs/merging.md's numbers: L = 24, lambda = 0.3, alpha = 0.7 (sums by `bc -l`)."""
    dp = layer_coefficients(24, 0.3, 0.7, "depth_power")
    le = layer_coefficients(24, 0.3, 0.7, "linear_exponent")
    ap = layer_coefficients(24, 0.3, 0.7, "adult_power")
    assert sum(dp) / 24 == pytest.approx(0.877496065052607, abs=1e-12)
    assert sum(le) / 24 == pytest.approx(0.073165086558035, abs=1e-12)
    assert dp[0] == pytest.approx(0.999670542008348, abs=1e-12) and dp[23] == pytest.approx(0.3)
    assert le[0] == 1.0 and le[23] == pytest.approx(3.81638518248e-9, rel=1e-9)
    # adult_power: 1 - 0.3^(0.7^i); `bc -l`: sum over i < 24 of 1 - e(0.7^i * l(0.3)), / 24;
    # layer 1: 1 - 0.3^0.7; layer 23: 0.7^23 = 0.000273687473400809, 1 - 0.3^that
    assert sum(ap) / 24 == pytest.approx(0.122503934947392538, abs=1e-12)
    assert ap[0] == pytest.approx(0.7, abs=1e-15) and ap[1] == pytest.approx(0.569488379750065776, abs=1e-12)
    assert ap[23] == pytest.approx(0.000329457991652102, abs=1e-15)
    assert sum(c > 0.5 for c in ap) == 2  # only layers 0 and 1 lean to the child


# adult_power (the seed summary's sentences: lambda^(alpha^i) is the ADULT's weight, i = 0 the
# bottom layer; child weight c_i = 1 - lambda^(alpha^i)); L = 12, alpha = 0.8, layers 0, 5, 11.
# Exponents: 0.8^0 = 1, 0.8^5 = 0.32768, 0.8^11 = 0.08589934592 (exact).
# `echo "scale=20; e(0.32768*l(0.1))" | bc -l` etc.:
#   lambda 0.1: 0.1^1 = 0.1, 0.1^0.32768 = 0.470240466967004518, 0.1^0.08589934592 = 0.820541694798573423
#   lambda 0.3: 0.3^1 = 0.3, 0.3^0.32768 = 0.674004960353812088, 0.3^0.08589934592 = 0.901747730119039728
# child weights 1 - those:
ADULT_POWER_L12_LAM01 = {0: 0.9, 5: 0.529759533032995482, 11: 0.179458305201426577}
ADULT_POWER_L12_LAM03 = {0: 0.7, 5: 0.325995039646187912, 11: 0.098252269880960272}
# a two-layer toy, lambda 0.3, alpha 0.8: c_0 = 1 - 0.3 = 0.7, c_1 = 1 - 0.3^0.8 = 1 - 0.381677890961817631
ADULT_POWER_L2 = [0.7, 0.618322109038182369]


@pytest.mark.parametrize("lam,expected", [(0.1, ADULT_POWER_L12_LAM01), (0.3, ADULT_POWER_L12_LAM03)])
def test_adult_power_at_12_layers(lam, expected):
    c = layer_coefficients(12, lam, 0.8, "adult_power")
    assert {i: c[i] for i in expected} == pytest.approx(expected, abs=1e-12)
    assert all(a > b for a, b in zip(c, c[1:]))  # lower layers take more of the child model


def test_adult_power_agrees_with_both_summary_sentences():
    """A smaller lambda favours the child at every layer; the other two readings do the opposite."""
    low, high = ADULT_POWER_L12_LAM01, ADULT_POWER_L12_LAM03
    assert all(low[i] > high[i] for i in low)  # the hand-computed numbers
    lo, hi = layer_coefficients(12, 0.1, 0.8, "adult_power"), layer_coefficients(12, 0.3, 0.8, "adult_power")
    assert all(a > b for a, b in zip(lo, hi))
    for other in ("depth_power", "linear_exponent"):
        lo, hi = layer_coefficients(12, 0.1, 0.8, other), layer_coefficients(12, 0.3, 0.8, other)
        assert all(a <= b for a, b in zip(lo, hi)) and lo[11] < hi[11]  # smaller lambda -> more adult


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


GROUPS_YAML = """\
# the authors' release form; layer 2 is in no group
- layers: [0, 1]
  lambda: 0.3
  alpha: 0.5
- layers: [3, 3]
  lambda: 0.3
  alpha: 0.9
"""


def test_groups_file_at_4_layers(tmp_path):
    schedule = load_schedule(write(tmp_path, "groups.yaml", GROUPS_YAML))
    assert schedule.kind == "groups"
    plan = schedule.plan({"encoder": 4})
    assert plan.tables["encoder"] == pytest.approx([C_03_05, C_03_05, 1.0, C_03_09], abs=1e-12)
    assert plan.rules["encoder"][2] == "not listed: child"
    assert plan.rules["encoder"][3].startswith("group 2")


def test_explicit_file_and_formula_file(tmp_path):
    explicit = load_schedule(write(tmp_path, "c.yaml", "coefficients:\n  encoder: [0.9, 0.6, 0.4, 0.1]\n"))
    plan = explicit.plan({"encoder": 4, "decoder": 2})
    assert plan.tables == {"encoder": [0.9, 0.6, 0.4, 0.1], "decoder": [1.0, 1.0]}  # decoder not listed: child
    shared = load_schedule(write(tmp_path, "s.yaml", "coefficients: [0.5, 0.25]\n"))
    assert shared.plan({"encoder": 2, "decoder": 2}).tables == {"encoder": [0.5, 0.25], "decoder": [0.5, 0.25]}
    formula = load_schedule(write(tmp_path, "f.yaml", "schedule: depth_power\nlambda: 0.3\nalpha: 0.7\n"))
    assert formula.plan({"encoder": 4}).tables["encoder"] == pytest.approx(DEPTH_POWER_L4, abs=1e-12)


@pytest.mark.parametrize(
    "text,message",
    [
        ("- layers: [0, 1]\n  lambda: 0.3\n  alpha: 0.5\n- layers: [1, 2]\n  lambda: 0.2\n  alpha: 0.5\n", "in two groups"),
        ("- layers: [2, 4]\n  lambda: 0.3\n  alpha: 0.5\n", "lists layer 4, but the encoder has 4 layers"),
        ("- layers: [0, 1]\n  lambda: 0.3\n", "missing 'alpha'"),
        ("- layers: [0, 1]\n  lamda: 0.3\n  alpha: 0.5\n", "unknown key"),
        ("- layers: [3, 1]\n  lambda: 0.3\n  alpha: 0.5\n", "first > last"),
        ("- layers: [0]\n  lambda: 1.5\n  alpha: 0.5\n", "lambda must be in"),
        ("- layers: 0\n  lambda: 0.3\n  alpha: 0.5\n  stacks: [decoder]\n", "names stack"),
        ("coefficients: [0.5, 0.5]\n", "2 coefficients given for the encoder, which has 4"),
        ("coefficients: [1.2, 0.5, 0.5, 0.5]\n", "must be in [0, 1]"),
        ("groups: []\n", "non-empty"),
    ],
)
def test_bad_schedule_files_name_the_file(tmp_path, text, message):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ScheduleError, match=re.escape(message)) as err:
        load_schedule(path).plan({"encoder": 4})
    assert str(path) in str(err.value)


def test_layer_specs(tmp_path):
    text = "- layers: '0-1,3'\n  lambda: 0.3\n  alpha: 0.5\n- layers: [2]\n  lambda: 0.3\n  alpha: 0.9\n"
    plan = load_schedule(write(tmp_path, "g.yaml", text)).plan({"encoder": 4})
    assert plan.tables["encoder"] == pytest.approx([C_03_05, C_03_05, C_03_09, C_03_05], abs=1e-12)
    with pytest.raises(ValueError, match="layer indices"):
        LayerGroup((), 0.3, 0.5)


# --------------------------------------------------------------------------- applied to checkpoints
def fairseq_state(seed: int, layers: int = 4, dim: int = 3) -> Dict[str, torch.Tensor]:
    """HuBERT-like names (label_embs_concat marks the architecture)."""
    gen = torch.Generator().manual_seed(seed)
    state = {"label_embs_concat": torch.randn(2, dim, generator=gen),
             "feature_extractor.conv_layers.0.0.weight": torch.randn(dim, 1, 2, generator=gen)}  # fmt: skip
    for i in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            state[f"encoder.layers.{i}.self_attn.{proj}.weight"] = torch.randn(dim, dim, generator=gen)
            state[f"encoder.layers.{i}.self_attn.{proj}.bias"] = torch.randn(dim, generator=gen)
        state[f"encoder.layers.{i}.fc1.weight"] = torch.randn(dim, dim, generator=gen)
    return state


QKV = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.[qkv]_proj\.")


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


def test_group_list_leaving_a_layer_out_keeps_the_child_there(tmp_path):
    base, m1, m2 = fairseq_state(0), fairseq_state(1), fairseq_state(2)
    config = MergeConfig("sa", schedule=str(write(tmp_path, "groups.yaml", GROUPS_YAML)))
    out, report = merge([from_object(m1), from_object(m2)], config, from_object(base))
    c = [C_03_05, C_03_05, None, C_03_09]  # layer 2: in no group
    for key, value in out.items():
        m = QKV.match(key)
        if m is None or c[int(m.group(1))] is None:
            assert bits_equal(value, m1[key]), key  # the child's bits: layer 2, out_proj, fc1, ...
            continue
        ci = c[int(m.group(1))]
        expected = base[key] + ci * (m1[key] - base[key]) + (1 - ci) * (m2[key] - base[key])
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(value, m1[key])
    assert report.actions["merged"] == 3 * 6  # layers 0, 1, 3 x (q, k, v) x (weight, bias)


def test_extra_patterns_merge_other_tensors_with_their_groups_c(tmp_path):
    base, m1, m2 = fairseq_state(0), fairseq_state(1), fairseq_state(2)
    text = GROUPS_YAML + "  extra: ['conv_layers\\.0\\.']\n"  # the conv joins group 2
    out, report = merge([from_object(m1), from_object(m2)], MergeConfig("sa", schedule=str(write(tmp_path, "g.yaml", text))),
                        from_object(base))  # fmt: skip
    key = "feature_extractor.conv_layers.0.0.weight"
    expected = base[key] + C_03_09 * (m1[key] - base[key]) + (1 - C_03_09) * (m2[key] - base[key])
    torch.testing.assert_close(out[key], expected, rtol=1e-6, atol=1e-7)
    assert set(report.extra_tensors) == {key}
    assert bits_equal(out["label_embs_concat"], m1["label_embs_concat"])

    for extra, message in (("nothing_matches_this", "matches no tensor"), ("self_attn\\.q_proj", "attention tensor")):
        path = write(tmp_path, "bad.yaml", GROUPS_YAML + f"  extra: ['{extra}']\n")
        with pytest.raises(ScheduleError, match=message):
            merge([from_object(m1), from_object(m2)], MergeConfig("sa", schedule=str(path)), from_object(base))


def test_explicit_zero_and_one_give_the_models_bits():
    base, m1, m2 = fairseq_state(0), fairseq_state(1), fairseq_state(2)
    schedule = Schedule.explicit({"encoder": [1.0, 0.0, 0.5, 1.0]})
    out, report = merge([from_object(m1), from_object(m2)], MergeConfig("sa", schedule=schedule), from_object(base))
    for key, value in out.items():
        m = QKV.match(key)
        layer = None if m is None else int(m.group(1))
        if layer == 1:
            assert bits_equal(value, m2[key]), key
        elif layer == 2:
            torch.testing.assert_close(value, base[key] + 0.5 * (m1[key] - base[key]) + 0.5 * (m2[key] - base[key]))
        else:
            assert bits_equal(value, m1[key]), key
    assert report.actions["from_m2"] == 6 and report.actions["merged"] == 6


def test_schedule_table_is_logged_and_written_beside_the_model(tmp_path, caplog):
    paths = {}
    for name, seed in (("base", 0), ("m1", 1), ("m2", 2)):
        paths[name] = tmp_path / f"{name}.pth"
        torch.save(fairseq_state(seed), paths[name])
    groups = write(tmp_path, "groups.yaml", GROUPS_YAML)
    out = tmp_path / "merged" / "sa.pth"
    with caplog.at_level(logging.INFO):
        merge_cli.main(["--method", "sa", "--schedule", str(groups), "--base", str(paths["base"]),
                        "--models", str(paths["m1"]), str(paths["m2"]), "--out", str(out), "--progress", "false"])  # fmt: skip
    rows = [line.split("\t") for line in (tmp_path / "merged" / "merge_schedule.tsv").read_text().splitlines()]
    assert rows[0] == ["stack", "layer", "c_child", "c_adult", "rule"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("encoder", str(i)) for i in range(4)]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx([C_03_05, C_03_05, 1.0, C_03_09], abs=1e-9)
    assert [float(r[3]) for r in rows[1:]] == pytest.approx([1 - C_03_05, 1 - C_03_05, 0.0, 1 - C_03_09], abs=1e-9)
    assert rows[3][4] == "not listed: child"
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoder ")]
    assert [float(line.split()[2]) for line in logged] == pytest.approx([C_03_05, C_03_05, 1.0, C_03_09], abs=1e-6)

    # a formula schedule through the library writes the same kind of table where asked
    report = merge_files([paths["m1"], paths["m2"]], tmp_path / "f.pth", MergeConfig("sa", sa_lambda=0.3, sa_alpha=0.7),
                         base_path=paths["base"], progress=False, schedule_out=tmp_path / "f.tsv")  # fmt: skip
    rows = [line.split("\t") for line in (tmp_path / "f.tsv").read_text().splitlines()[1:]]
    assert [float(r[2]) for r in rows] == pytest.approx(DEPTH_POWER_L4, abs=1e-9)
    assert report.layer_coefs["encoder"] == pytest.approx(DEPTH_POWER_L4, abs=1e-12)


def check_adult_power_merge(out, report, base, m1, m2, c_of_layer) -> None:
    """Q/K/V of layer i: base + c_i tau_child + (1 - c_i) tau_adult; everything else the child's bits."""
    seen = set()
    for key, value in out.items():
        m = QKV.match(key)
        if m is None or int(m.group(1)) not in c_of_layer:
            if m is None:
                assert bits_equal(value, m1[key]), key  # out_proj, fc1, conv, label embeddings
            continue
        ci = c_of_layer[int(m.group(1))]
        expected = base[key] + ci * (m1[key] - base[key]) + (1 - ci) * (m2[key] - base[key])
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        seen.add(int(m.group(1)))
    assert seen == set(c_of_layer)
    for layer, ci in c_of_layer.items():
        assert report.layer_coefs["encoder"][layer] == pytest.approx(ci, abs=1e-12)


def test_adult_power_merge_of_a_two_layer_toy(tmp_path):
    base, m1, m2 = (fairseq_state(s, layers=2) for s in (0, 1, 2))
    expected = dict(enumerate(ADULT_POWER_L2))
    config = MergeConfig("sa", schedule="adult_power", sa_lambda=0.3, sa_alpha=0.8)
    out, report = merge([from_object(m1), from_object(m2)], config, from_object(base))
    check_adult_power_merge(out, report, base, m1, m2, expected)
    assert report.actions["merged"] == 2 * 6  # 2 layers x (q, k, v) x (weight, bias)
    # the same reading from a schedule file
    path = write(tmp_path, "adult.yaml", "schedule: adult_power\nlambda: 0.3\nalpha: 0.8\n")
    assert load_schedule(path).kind == "adult_power"
    out, report = merge([from_object(m1), from_object(m2)], MergeConfig("sa", schedule=str(path)), from_object(base))
    check_adult_power_merge(out, report, base, m1, m2, expected)


def test_adult_power_merge_at_12_layers_through_the_command(tmp_path):
    paths = {}
    for name, seed in (("base", 0), ("m1", 1), ("m2", 2)):
        paths[name] = tmp_path / f"{name}.pth"
        torch.save(fairseq_state(seed, layers=12), paths[name])
    out = tmp_path / "merged" / "sa.pth"
    merge_cli.main(["--method", "sa", "--schedule", "adult_power", "--lambda", "0.1", "--alpha", "0.8",
                    "--base", str(paths["base"]), "--models", str(paths["m1"]), str(paths["m2"]), "--out", str(out),
                    "--progress", "false"])  # fmt: skip
    merged = torch.load(out, weights_only=True)
    state = {name: torch.load(path, weights_only=True) for name, path in paths.items()}
    rows = [line.split("\t") for line in (tmp_path / "merged" / "merge_schedule.tsv").read_text().splitlines()[1:]]
    assert {int(r[1]): float(r[2]) for r in rows if int(r[1]) in ADULT_POWER_L12_LAM01} == pytest.approx(
        ADULT_POWER_L12_LAM01, abs=1e-9
    )
    assert {r[4] for r in rows} == {"adult_power"}
    for layer, ci in ADULT_POWER_L12_LAM01.items():
        for proj in ("q_proj", "k_proj", "v_proj"):
            key = f"encoder.layers.{layer}.self_attn.{proj}.weight"
            b, t1, t2 = state["base"][key], state["m1"][key], state["m2"][key]
            torch.testing.assert_close(merged[key], b + ci * (t1 - b) + (1 - ci) * (t2 - b), rtol=1e-6, atol=1e-7)
