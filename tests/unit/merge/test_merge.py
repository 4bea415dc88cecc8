"""Model merging: formulas, schedules, key alignment, checks, determinism and the CLI."""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest
import torch

from espnet_delta.bin import merge as merge_cli
from espnet_delta.merge import (
    ArchitectureMismatchError,
    CheckpointFormatError,
    KeyMismatchError,
    MergeConfig,
    ShapeMismatchError,
    attention_qkv_layer,
    detect_architecture,
    from_object,
    layer_coefficients,
    load_checkpoint,
    merge,
    merge_files,
    ops,
)
from espnet_delta.ssl.tiny import weights_of

NEW = "frontend.upstream.upstream.model."
OLD = "frontend.upstream.model."
FAIRSEQ_QKV = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$")


# --------------------------------------------------------------------------- helpers
def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality (distinguishes -0.0 from 0.0, compares NaN payloads)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def noisy(value: torch.Tensor, gen: torch.Generator, scale: float = 0.05) -> torch.Tensor:
    if not value.is_floating_point():
        return value.clone()
    return value + scale * torch.randn(value.shape, generator=gen, dtype=value.dtype)


def espnet_state(
    bare: Dict[str, torch.Tensor],
    seed: int,
    prefix: str = NEW,
    vocab: int = 6,
    change: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None,
) -> Dict[str, torch.Tensor]:
    """A "fine-tuned" ESPnet ASR state dict: noisy upstream + featurizer + CTC head."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in bare.items():
        value = noisy(value, gen)
        state[prefix + key] = change(key, value) if change else value
    dim = bare["encoder.layer_norm.weight"].numel()
    state["frontend.featurizer.weights"] = torch.randn(4, generator=gen)
    state["ctc.ctc_lo.weight"] = torch.randn(vocab, dim, generator=gen)
    state["ctc.ctc_lo.bias"] = torch.randn(vocab, generator=gen)
    return state


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def qkv_layer(key: str, prefix: str = NEW) -> Optional[int]:
    if not key.startswith(prefix):
        return None
    m = FAIRSEQ_QKV.match(key[len(prefix):])
    return int(m.group(1)) if m else None


@pytest.fixture(scope="module")
def wavlm_files(tiny_upstreams, tmp_path_factory):
    """Bare pre-trained WavLM (S3PRL format) + two fine-tuned ESPnet checkpoints."""
    out = tmp_path_factory.mktemp("merge_wavlm")
    bare = weights_of(torch.load(tiny_upstreams["wavlm"], weights_only=True))
    m1 = save(espnet_state(bare, seed=1), out / "m1.pth")
    m2 = save(espnet_state(bare, seed=2), out / "m2.pth")
    return {"base": tiny_upstreams["wavlm"], "m1": m1, "m2": m2, "bare": bare, "dir": out}


def synthetic(seed: int, num_layers: int = 2, dim: int = 4) -> Dict[str, torch.Tensor]:
    """A small fairseq-style (HuBERT-like) upstream state dict with real key names."""
    gen = torch.Generator().manual_seed(seed)
    state = {"label_embs_concat": torch.randn(3, dim, generator=gen)}
    for i in range(num_layers):
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            state[f"encoder.layers.{i}.self_attn.{proj}.weight"] = torch.randn(dim, dim, generator=gen)
            state[f"encoder.layers.{i}.self_attn.{proj}.bias"] = torch.randn(dim, generator=gen)
        state[f"encoder.layers.{i}.fc1.weight"] = torch.randn(dim, dim, generator=gen)
    state["encoder.layer_norm.weight"] = torch.randn(dim, generator=gen)
    return state


def whisper_state(seed: int, enc_layers: int = 2, dec_layers: int = 3, dim: int = 4) -> Dict[str, torch.Tensor]:
    """Key names of ESPnet's OpenAIWhisperEncoder/Decoder (``key`` has no bias)."""
    gen = torch.Generator().manual_seed(seed)
    state = {"encoder.encoders.conv1.weight": torch.randn(dim, 2, 3, generator=gen)}

    def attn(prefix: str) -> None:
        for proj in ("query", "key", "value", "out"):
            state[f"{prefix}.{proj}.weight"] = torch.randn(dim, dim, generator=gen)
            if proj != "key":
                state[f"{prefix}.{proj}.bias"] = torch.randn(dim, generator=gen)

    for i in range(enc_layers):
        attn(f"encoder.encoders.blocks.{i}.attn")
        state[f"encoder.encoders.blocks.{i}.mlp.0.weight"] = torch.randn(dim, dim, generator=gen)
    state["decoder.decoders.token_embedding.weight"] = torch.randn(7, dim, generator=gen)
    for i in range(dec_layers):
        attn(f"decoder.decoders.blocks.{i}.attn")
        attn(f"decoder.decoders.blocks.{i}.cross_attn")
        state[f"decoder.decoders.blocks.{i}.cross_attn_ln.weight"] = torch.randn(dim, generator=gen)
    state["ctc.ctc_lo.weight"] = torch.randn(7, dim, generator=gen)
    return state


# --------------------------------------------------------------------------- schedules
def test_schedule_depth_power_4_layers():
    # c_i = 0.2 ** (0.8 ** (3 - i)): exponents 0.512, 0.64, 0.8, 1 (values from `bc -l`).
    expected = [0.438659316692216, 0.356992586345327, 0.275945932292243, 0.2]
    assert layer_coefficients(4, 0.2, 0.8, "depth_power") == pytest.approx(expected, abs=1e-12)


def test_schedule_linear_exponent_4_layers():
    # c_i = 0.2 ** (0.8 * i): 1, 0.2^0.8, 0.2^1.6, 0.2^2.4.
    expected = [1.0, 0.275945932292243, 0.076146157548635, 0.021012222435230]
    assert layer_coefficients(4, 0.2, 0.8, "linear_exponent") == pytest.approx(expected, abs=1e-12)


# lambda = 0.3, alpha = 0.7, L = 3 (the tiny upstreams' depth), by hand with `bc -l`:
#   depth_power     c_i = 0.3 ** (0.7 ** (2 - i)): exponents 0.49, 0.7, 1
#                   -> e(0.49 * l(0.3)) = 0.554356845513105, e(0.7 * l(0.3)) = 0.430511620249934, 0.3
#   linear_exponent c_i = 0.3 ** (0.7 * i):       exponents 0, 0.7, 1.4
#                   -> 1, 0.430511620249934, e(1.4 * l(0.3)) = 0.185340255170224
DEPTH_POWER_L3 = [0.554356845513105, 0.430511620249934, 0.3]
LINEAR_EXPONENT_L3 = [1.0, 0.430511620249934, 0.185340255170224]


def test_schedule_3_layers():
    assert layer_coefficients(3, 0.3, 0.7, "depth_power") == pytest.approx(DEPTH_POWER_L3, abs=1e-12)
    assert layer_coefficients(3, 0.3, 0.7, "linear_exponent") == pytest.approx(LINEAR_EXPONENT_L3, abs=1e-12)


def test_schedule_12_layers():
    # lambda = 0.5, alpha = 0.9. depth_power: 0.5 ** (0.9 ** (11 - i)), top layer = lambda.
    depth_power = [
        0.804513984455, 0.785303134079, 0.764495286086, 0.742021446247,
        0.717824515128, 0.691863338362, 0.664117306530, 0.634591454958,
        0.603321959860, 0.570381857934, 0.535886731268, 0.500000000000,
    ]  # fmt: skip
    # linear_exponent: 0.5 ** (0.9 * i); e.g. i = 10 gives 0.5 ** 9 = 0.001953125.
    linear = [
        1.000000000000, 0.535886731268, 0.287174588749, 0.153893051668,
        0.082469244423, 0.044194173824, 0.023683071352, 0.012691443693,
        0.006801176276, 0.003644660123, 0.001953125000, 0.001046653772,
    ]  # fmt: skip
    assert layer_coefficients(12, 0.5, 0.9) == pytest.approx(depth_power, abs=1e-11)
    assert layer_coefficients(12, 0.5, 0.9, "linear_exponent") == pytest.approx(linear, abs=1e-11)
    # lower layers keep more of M1 under both schedules
    for c in (depth_power, linear):
        assert all(a > b for a, b in zip(c, c[1:]))


# --------------------------------------------------------------------------- formulas
def test_ties_hand_computed():
    # Three task vectors over 6 entries, top 50 % kept (3 entries each):
    #   tau1 = [ 4, 2.5,  0.5,  3,  -0.2, 0.1] -> trimmed [4, 2.5, 0, 3,  0,  0]
    #   tau2 = [-1, 2,   -0.2,  2.5, -3,  0.3] -> trimmed [0, 2,   0, 2.5, -3, 0]
    #   tau3 = [ 2, -6,   0.4, -0.5,  1,  -7 ] -> trimmed [2, -6,  0, 0,  0,  -7]
    # elected sign = sign of the trimmed sum [6, -1.5, 0, 5.5, -3, -7] -> [+, -, 0, +, -, -]
    # (entry 1: two models vote + by count, but the larger mass is -6, so - wins).
    # disjoint mean of the agreeing values: [(4+2)/2, -6, 0, (3+2.5)/2, -3, -7]
    #   = [3, -6, 0, 2.75, -3, -7];  base 1 + 0.5 * that = [2.5, -2, 1, 2.375, -0.5, -2.5].
    base = torch.ones(6)
    taus = [
        torch.tensor([4, 2.5, 0.5, 3, -0.2, 0.1]),
        torch.tensor([-1, 2, -0.2, 2.5, -3, 0.3]),
        torch.tensor([2, -6, 0.4, -0.5, 1, -7]),
    ]
    merged = ops.ties(base, [base + t for t in taus], topk=50, scale=0.5)
    assert torch.equal(merged, torch.tensor([2.5, -2, 1, 2.375, -0.5, -2.5]))


def ties_two_models(base: torch.Tensor, theta_1: torch.Tensor, theta_2: torch.Tensor, topk: float) -> torch.Tensor:
    """TIES of two models from its definition, case by case (no exact magnitude ties in random weights).

    Each task vector keeps its ceil(n * topk / 100) largest magnitudes. Where both kept
    entries agree in sign: their mean; where they disagree: the one with the larger
    magnitude (it decides the sign of the sum, the other is not averaged); where only
    one is kept: that one; else 0. Scale 1.
    """
    taus = [theta_1 - base, theta_2 - base]
    k = math.ceil(base.numel() * topk / 100)
    kept = [t.abs() >= t.abs().flatten().sort(descending=True).values[k - 1] for t in taus]
    t1, t2 = (torch.where(m, t, torch.zeros_like(t)) for m, t in zip(kept, taus))
    both, agree = kept[0] & kept[1], torch.sign(t1) == torch.sign(t2)
    larger = torch.where(t1.abs() >= t2.abs(), t1, t2)
    merged = torch.where(both & agree, (t1 + t2) / 2, torch.where(both, larger, t1 + t2))
    return base + merged


def test_ties_through_merge_hand_computed():
    """One tensor of a checkpoint merged with ties_topk=50, ties_scale=0.5, by hand."""
    # 6 entries, top 50 % = 3 kept per task vector; base 0.5 everywhere.
    #   tau1 = [ 1, -4,    0.5, 2,   -0.1, 3] -> trimmed [ 0, -4,   0, 2, 0, 3]
    #   tau2 = [-3,  1.5, -0.2, 0.3, -1,   4] -> trimmed [-3,  1.5, 0, 0, 0, 4]
    # trimmed sum [-3, -2.5, 0, 2, 0, 7] -> elected sign [-, -, 0, +, 0, +]
    # disjoint mean of the agreeing values [-3, -4, 0, 2, 0, (3 + 4) / 2] = [-3, -4, 0, 2, 0, 3.5]
    # 0.5 + 0.5 * that = [-1, -1.5, 0.5, 1.5, 0.5, 2.25]
    key = "encoder.layers.0.fc1.weight"
    base, m1, m2 = synthetic(0), synthetic(1), synthetic(2)
    base[key] = torch.full((2, 3), 0.5)
    m1[key] = base[key] + torch.tensor([[1, -4, 0.5], [2, -0.1, 3]])
    m2[key] = base[key] + torch.tensor([[-3, 1.5, -0.2], [0.3, -1, 4]])
    out, report = merge([from_object(m1), from_object(m2)], MergeConfig("ties", ties_topk=50, ties_scale=0.5),
                        from_object(base))  # fmt: skip
    torch.testing.assert_close(out[key], torch.tensor([[-1, -1.5, 0.5], [1.5, 0.5, 2.25]]), rtol=0, atol=1e-6)
    # the default top 20 % keeps ceil(1.2) = 2 entries each: tau1 [0, -4, 0, 0, 0, 3], tau2 [-3, 0, 0, 0, 0, 4]
    # -> merged [-3, -4, 0, 0, 0, 3.5], so 0.5 + 1.0 * that
    out, _ = merge([from_object(m1), from_object(m2)], MergeConfig("ties"), from_object(base))
    torch.testing.assert_close(out[key], torch.tensor([[-2.5, -3.5, 0.5], [0.5, 0.5, 4.0]]), rtol=0, atol=1e-6)


def test_trim_keeps_ties_at_threshold():
    # top 25 % of 4 entries = 1 entry, but two share the largest magnitude: both kept.
    mask = ops.trim_mask(torch.tensor([3.0, -3.0, 1.0, 2.0]), 25)
    assert mask.tolist() == [True, True, False, False]
    assert ops.trim_mask(torch.tensor([1.0, 2.0]), 100).all()


def test_task_arithmetic_and_transfer_formulas():
    gen = torch.Generator().manual_seed(0)
    base, t1, t2 = (torch.randn(5, 3, generator=gen) for _ in range(3))
    ta = ops.task_arithmetic(base, [t1, t2], [0.3, 0.6])
    torch.testing.assert_close(ta, base + 0.3 * (t1 - base) + 0.6 * (t2 - base))
    target, aug, orig = (torch.randn(5, 3, generator=gen) for _ in range(3))
    torch.testing.assert_close(ops.transfer(target, aug, orig, 0.7), target + 0.7 * (aug - orig))


def test_half_precision_is_computed_in_float32():
    a = torch.tensor([1.0, 2.0], dtype=torch.float16)
    b = torch.tensor([3.0, 5.0], dtype=torch.float16)
    out = ops.lerp(a, b, 0.25)
    assert out.dtype == torch.float16
    assert out.tolist() == [2.5, 4.25]


# --------------------------------------------------------------------------- methods on real checkpoints
def test_lerp_c1_returns_m1_bit_exactly(wavlm_files, tmp_path):
    m1 = torch.load(wavlm_files["m1"], weights_only=True)
    m2 = torch.load(wavlm_files["m2"], weights_only=True)
    key = NEW + "encoder.layers.0.fc1.weight"
    m1[key][0, 0], m2[key][0, 0] = -0.0, 1.0  # -0.0 + 0 * 1.0 would give +0.0
    m2[key][0, 1] = float("inf")  # 0 * inf would give NaN
    m1p, m2p = save(m1, tmp_path / "m1.pth"), save(m2, tmp_path / "m2.pth")
    merge_files([m1p, m2p], tmp_path / "out.pth", MergeConfig("lerp", coefs=[1.0]), progress=False)
    out = torch.load(tmp_path / "out.pth", weights_only=True)
    assert list(out) == list(m1)
    assert all(bits_equal(out[k], m1[k]) for k in m1)


@pytest.mark.parametrize("arch", ["wavlm", "hubert", "wav2vec2"])
def test_sa_merge_only_changes_qkv(arch, tiny_upstreams, tmp_path):
    bare = weights_of(torch.load(tiny_upstreams[arch], weights_only=True))
    m1 = espnet_state(bare, seed=1)
    m2 = espnet_state(bare, seed=2)
    config = MergeConfig("sa", sa_lambda=0.3, sa_alpha=0.7)
    out, report = merge(
        [from_object(m1, "M1"), from_object(m2, "M2")],
        config,
        base=load_checkpoint(tiny_upstreams[arch]),
        progress=False,
    )
    assert report.architecture == arch
    num_layers = 1 + max(int(k.split(".")[2]) for k in bare if k.startswith("encoder.layers."))
    assert num_layers == 3
    c = DEPTH_POWER_L3  # hand-computed above for lambda = 0.3, alpha = 0.7
    assert report.layer_coefs == {"encoder": pytest.approx(c, abs=1e-12)}
    merged = 0
    for key, value in out.items():
        layer = qkv_layer(key)
        if layer is None:  # out_proj, relative position bias, gru gates, CTC head, ...
            assert bits_equal(value, m1[key]), key
            continue
        b = bare[key[len(NEW):]]
        expected = b + c[layer] * (m1[key] - b) + (1 - c[layer]) * (m2[key] - b)
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(value, m1[key])
        merged += 1
    assert merged == 6 * num_layers == report.actions["merged"]


def test_sa_merge_whisper_encoder_decoder():
    base, m1, m2 = whisper_state(0), whisper_state(1), whisper_state(2)
    out, report = merge(
        [from_object(m1), from_object(m2)], MergeConfig("sa", sa_lambda=0.2, sa_alpha=0.8), from_object(base)
    )
    assert report.architecture == "whisper"
    assert set(report.layer_coefs) == {"encoder", "decoder"}
    assert len(report.layer_coefs["encoder"]) == 2 and len(report.layer_coefs["decoder"]) == 3
    assert report.layer_coefs["decoder"][-1] == pytest.approx(0.2)
    pattern = re.compile(r"^(encoder|decoder)\.\w+\.blocks\.(\d+)\.(attn|cross_attn)\.(query|key|value)\.")
    merged = 0
    for key, value in out.items():
        m = pattern.match(key)
        if m is None:  # out projections, MLPs, layer norms, embeddings, CTC
            assert bits_equal(value, m1[key]), key
            continue
        c = report.layer_coefs[m.group(1)][int(m.group(2))]
        expected = base[key] + c * (m1[key] - base[key]) + (1 - c) * (m2[key] - base[key])
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        merged += 1
    # encoder: 2 layers x (q w/b, k w, v w/b); decoder: 3 layers x 2 attentions x 5
    assert merged == 2 * 5 + 3 * 2 * 5
    assert attention_qkv_layer("whisper", "decoder.decoders.blocks.1.cross_attn.key.weight") == ("decoder", 1)
    assert attention_qkv_layer("whisper", "encoder.encoders.blocks.0.attn.out.weight") is None


def test_ta_ties_transfer_on_checkpoints(wavlm_files):
    bare = wavlm_files["bare"]
    m1 = torch.load(wavlm_files["m1"], weights_only=True)
    m2 = torch.load(wavlm_files["m2"], weights_only=True)
    base = load_checkpoint(wavlm_files["base"])
    key = NEW + "encoder.layers.1.fc2.weight"
    b = bare["encoder.layers.1.fc2.weight"]

    out, _ = merge([from_object(m1), from_object(m2)], MergeConfig("ta", coefs=[0.4, 0.5]), base)
    torch.testing.assert_close(out[key], b + 0.4 * (m1[key] - b) + 0.5 * (m2[key] - b))
    for head in ("ctc.ctc_lo.weight", "frontend.featurizer.weights"):  # no task vector: from M1
        assert bits_equal(out[head], m1[head])

    out, report = merge([from_object(m1), from_object(m2)], MergeConfig("ties", ties_topk=30), base)
    torch.testing.assert_close(out[key], ties_two_models(b, m1[key], m2[key], 30))
    assert bits_equal(out["ctc.ctc_lo.bias"], m1["ctc.ctc_lo.bias"])
    assert report.actions["head_from_m1"] == 3

    # transfer: target M1 gets (M2 - base) with all three fine-tuned ESPnet checkpoints
    orig = espnet_state(bare, seed=3)
    out, _ = merge([from_object(m1), from_object(m2)], MergeConfig("transfer", coefs=[0.5]), from_object(orig))
    for k in (key, "ctc.ctc_lo.weight"):
        torch.testing.assert_close(out[k], m1[k] + 0.5 * (m2[k] - orig[k]))

    out, _ = merge([from_object(m1), from_object(m2)], MergeConfig("lerp", coefs=[0.25]))
    for k in (key, "ctc.ctc_lo.weight"):  # lerp interpolates the head too
        torch.testing.assert_close(out[k], 0.25 * m1[k] + 0.75 * m2[k])


def test_integer_buffers_copied_from_m1():
    base, m1, m2 = synthetic(0), synthetic(1), synthetic(2)
    for i, state in enumerate((base, m1, m2)):
        state["encoder.bn.num_batches_tracked"] = torch.tensor(10 * i)
        state["encoder.position_ids"] = torch.arange(4) + i
        state["encoder.mask"] = torch.tensor([True, i % 2 == 0])
    for config in (MergeConfig("lerp"), MergeConfig("ta"), MergeConfig("ties"), MergeConfig("sa")):
        out, report = merge([from_object(m1), from_object(m2)], config, from_object(base))
        for key in ("encoder.bn.num_batches_tracked", "encoder.position_ids", "encoder.mask"):
            assert bits_equal(out[key], m1[key]), (config.method, key)
        assert report.actions["int_from_m1"] == 3


# --------------------------------------------------------------------------- key alignment
def test_prefix_alignment_bare_base_and_both_espnet_prefixes(wavlm_files, tmp_path):
    """Base bare S3PRL; M1/M2 with new or old ESPnet prefix: same numbers, M1's keys out."""
    bare = wavlm_files["bare"]
    config = MergeConfig("ta", coefs=[0.5, 0.5])
    results = {}
    for p1, p2 in ((NEW, NEW), (NEW, OLD), (OLD, NEW), (OLD, OLD)):
        m1 = save(espnet_state(bare, seed=1, prefix=p1), tmp_path / "m1.pth")
        m2 = save(espnet_state(bare, seed=2, prefix=p2), tmp_path / "m2.pth")
        merge_files([m1, m2], tmp_path / "out.pth", config, base_path=wavlm_files["base"], progress=False)
        out = torch.load(tmp_path / "out.pth", weights_only=True)
        assert list(out) == list(espnet_state(bare, seed=1, prefix=p1))
        results[p1, p2] = {k.replace(p1, NEW): v for k, v in out.items()}
    reference = results[NEW, NEW]
    for value in results.values():
        assert all(bits_equal(value[k], reference[k]) for k in reference)


def test_plain_upstream_state_dict_against_bare_base(wavlm_files):
    """A prefix-less state dict of the upstream itself (e.g. model.state_dict()) is merged
    key by key with a bare S3PRL base, not mistaken for head tensors."""
    bare = wavlm_files["bare"]
    gen = torch.Generator().manual_seed(3)
    m1 = {k: noisy(v, gen) for k, v in bare.items()}
    m2 = {k: noisy(v, gen) for k, v in bare.items()}
    out, report = merge([from_object(m1), from_object(m2)], MergeConfig("ta", coefs=[1.0]),
                        load_checkpoint(wavlm_files["base"]))  # fmt: skip
    assert report.actions["head_from_m1"] == 0 and report.architecture == "wavlm"
    key = "encoder.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(out[key], m1[key] + m2[key] - bare[key])


def test_s3prl_container_in_s3prl_container_out(tiny_upstreams, tmp_path):
    ckpt = torch.load(tiny_upstreams["hubert"], weights_only=True)
    gen = torch.Generator().manual_seed(5)
    tuned = dict(ckpt, model_weight={k: noisy(v, gen) for k, v in ckpt["model_weight"].items()})
    m1 = save(tuned, tmp_path / "m1.pt")
    merge_files([m1, tiny_upstreams["hubert"]], tmp_path / "out.pt", MergeConfig("lerp", coefs=[0.5]), progress=False)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert list(out) == list(ckpt)
    assert out["model_cfg"] == ckpt["model_cfg"] and out["dictionaries_symbols"] == ckpt["dictionaries_symbols"]
    key = "encoder.layers.0.fc1.weight"
    torch.testing.assert_close(out["model_weight"][key], 0.5 * tuned["model_weight"][key] + 0.5 * ckpt["model_weight"][key])
    from s3prl.upstream.hubert.convert import load_converted_model

    model, _ = load_converted_model(str(tmp_path / "out.pt"))  # strict load_state_dict inside
    loaded = model.state_dict()
    assert set(loaded) == set(out["model_weight"])
    assert all(torch.equal(loaded[k], v) for k, v in out["model_weight"].items())


# --------------------------------------------------------------------------- refusals
def test_architecture_mismatch_names_key(tiny_upstreams, wavlm_files):
    hubert = espnet_state(weights_of(torch.load(tiny_upstreams["hubert"], weights_only=True)), seed=2)
    m1 = load_checkpoint(wavlm_files["m1"])
    with pytest.raises(ArchitectureMismatchError) as err:
        merge([m1, from_object(hubert, "M2")], MergeConfig("sa"), load_checkpoint(wavlm_files["base"]))
    assert err.value.key == NEW + "label_embs_concat" and err.value.key in str(err.value)
    assert "wavlm" in str(err.value) and "hubert" in str(err.value)
    assert detect_architecture(["encoder.layers.0.self_attn.q_proj.weight"])[0] == "fairseq_transformer"


def test_shape_and_dtype_mismatch_name_key():
    base, m1, m2 = synthetic(0), synthetic(1), synthetic(2)
    bad = "encoder.layers.1.fc1.weight"
    m2[bad] = torch.randn(4, 5)
    with pytest.raises(ShapeMismatchError) as err:
        merge([from_object(m1), from_object(m2)], MergeConfig("ta"), from_object(base))
    assert err.value.key == bad and bad in str(err.value)
    m2[bad] = m1[bad].double()
    with pytest.raises(ShapeMismatchError, match=re.escape(bad)):
        merge([from_object(m1), from_object(m2)], MergeConfig("lerp"))


def test_missing_and_extra_keys_name_key(wavlm_files):
    bare = wavlm_files["bare"]
    missing = "encoder.layers.1.self_attn.q_proj.bias"
    m1 = espnet_state(bare, seed=1)
    m2 = espnet_state(bare, seed=2)
    del m2[NEW + missing]
    with pytest.raises(KeyMismatchError) as err:
        merge([from_object(m1), from_object(m2)], MergeConfig("lerp"))
    assert err.value.key == NEW + missing and missing in str(err.value)

    base = dict(bare)
    del base[missing]  # the base lacks an upstream tensor of M1
    with pytest.raises(KeyMismatchError) as err:
        merge([from_object(m1), from_object(espnet_state(bare, seed=2))], MergeConfig("sa"),
              from_object({"cfg": {}, "model": base}))  # fmt: skip
    assert err.value.key == NEW + missing

    base = dict(bare, extra_head=torch.zeros(2))  # ... or has one M1 lacks
    with pytest.raises(KeyMismatchError, match="extra_head"):
        merge([from_object(m1), from_object(espnet_state(bare, seed=2))], MergeConfig("ta"),
              from_object({"cfg": {}, "model": base}))  # fmt: skip


def test_keep_m1_skips_checks_for_matching_tensors(wavlm_files):
    bare = wavlm_files["bare"]
    m1 = espnet_state(bare, seed=1, vocab=6)
    m2 = espnet_state(bare, seed=2, vocab=9)  # another token list
    with pytest.raises(ShapeMismatchError, match=r"ctc\.ctc_lo\.weight"):
        merge([from_object(m1), from_object(m2)], MergeConfig("lerp"))
    out, report = merge([from_object(m1), from_object(m2)], MergeConfig("lerp", keep_m1=[r"^ctc\."]))
    assert bits_equal(out["ctc.ctc_lo.weight"], m1["ctc.ctc_lo.weight"])
    assert report.actions["keep_m1"] == 2


def test_config_and_format_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly 2"):
        MergeConfig("sa").check_inputs(3, True)
    with pytest.raises(ValueError, match="needs a base"):
        MergeConfig("ties").check_inputs(2, False)
    with pytest.raises(ValueError, match="no coefs"):
        MergeConfig("sa", coefs=[0.5]).check_inputs(2, True)
    with pytest.raises(CheckpointFormatError):
        from_object({"weights": [1, 2]})
    unknown = [from_object({"w": torch.ones(2)}) for _ in range(3)]
    with pytest.raises(ArchitectureMismatchError, match="known architecture"):
        merge(unknown[:2], MergeConfig("sa"), unknown[2])
    # a container holding a pickled Python object is refused by weights_only loading
    path = save({"cfg": argparse.Namespace(encoder_layers=2), "model": synthetic(0)}, tmp_path / "ns.pt")
    with pytest.raises(CheckpointFormatError, match="allow_pickle"):
        load_checkpoint(path)
    assert load_checkpoint(path, allow_pickle=True).container == "s3prl_wavlm"


# --------------------------------------------------------------------------- determinism, memory, CLI
@pytest.mark.parametrize("method", ["sa", "ties"])
def test_output_bytes_are_deterministic(method, wavlm_files, tmp_path):
    paths = []
    for name in ("a.pth", "other_name.pth"):
        merge_files(
            [wavlm_files["m1"], wavlm_files["m2"]], tmp_path / name, MergeConfig(method),
            base_path=wavlm_files["base"], progress=False,
        )  # fmt: skip
        paths.append(tmp_path / name)
    assert sha256(paths[0]) == sha256(paths[1])


def test_legacy_format_input_gives_same_bytes(wavlm_files, tmp_path):
    """Non-zip (legacy) files are loaded without memory-mapping; the result must not change."""
    m2 = torch.load(wavlm_files["m2"], weights_only=True)
    legacy = tmp_path / "m2_legacy.pth"
    torch.save(m2, legacy, _use_new_zipfile_serialization=False)
    for name, m2_path in (("zip.pth", wavlm_files["m2"]), ("legacy.pth", legacy)):
        merge_files([wavlm_files["m1"], m2_path], tmp_path / name, MergeConfig("ta"),
                    base_path=wavlm_files["base"], progress=False)  # fmt: skip
    assert sha256(tmp_path / "zip.pth") == sha256(tmp_path / "legacy.pth")


def test_release_inputs_consumes_tensors():
    base, m1, m2 = (from_object(synthetic(s)) for s in range(3))
    n = len(m1.state)
    out, _ = merge([m1, m2], MergeConfig("ta"), base, release_inputs=True)
    assert len(out) == n and not m1.state and not m2.state and not base.state


def test_cli_end_to_end(wavlm_files, tmp_path, caplog):
    out = tmp_path / "sa.pth"
    argv = [
        "--method", "sa", "--base", str(wavlm_files["base"]),
        "--models", str(wavlm_files["m1"]), str(wavlm_files["m2"]),
        "--lambda", "0.2", "--alpha", "0.8", "--schedule", "linear_exponent",
        "--out", str(out), "--progress", "false",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        merge_cli.main(argv)
    merged = torch.load(out, weights_only=True)
    m1 = torch.load(wavlm_files["m1"], weights_only=True)
    assert list(merged) == list(m1)
    # the per-layer table is logged: 3 layers, c = 0.2 ** (0.8 * i) = 1, 0.2^0.8, 0.2^1.6 (bc -l)
    table = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoder ")]
    assert [float(line.split()[2]) for line in table] == pytest.approx(
        [1.0, 0.275945932292243, 0.076146157548635], abs=1e-6
    )
    # ... and used: layer 2's query weight is base + c_2 * tau_1 + (1 - c_2) * tau_2
    key = NEW + "encoder.layers.2.self_attn.q_proj.weight"
    b = wavlm_files["bare"]["encoder.layers.2.self_attn.q_proj.weight"]
    m2 = torch.load(wavlm_files["m2"], weights_only=True)
    c2 = 0.076146157548635
    torch.testing.assert_close(merged[key], b + c2 * (m1[key] - b) + (1 - c2) * (m2[key] - b), rtol=1e-5, atol=1e-6)

    config = tmp_path / "merge.yaml"
    config.write_text(f"method: ties\nties_topk: 50\nbase: {wavlm_files['base']}\nprogress: false\n")
    merge_cli.main(["--config", str(config), "--models", str(wavlm_files["m1"]), str(wavlm_files["m2"]),
                    "--out", str(tmp_path / "ties.pth")])  # fmt: skip
    from_yaml = torch.load(tmp_path / "ties.pth", weights_only=True)
    for name, topk in (("top50.pth", 50.0), ("top20.pth", 20.0)):
        merge_files([wavlm_files["m1"], wavlm_files["m2"]], tmp_path / name, MergeConfig("ties", ties_topk=topk),
                    base_path=wavlm_files["base"], progress=False)  # fmt: skip
    top50 = torch.load(tmp_path / "top50.pth", weights_only=True)
    top20 = torch.load(tmp_path / "top20.pth", weights_only=True)
    assert list(from_yaml) == list(top50) and all(bits_equal(from_yaml[k], top50[k]) for k in top50)
    assert not torch.equal(from_yaml[key], top20[key])  # ties_topk: 50 was used, not the default 20

    with pytest.raises(SystemExit) as err:  # wrong number of models for SA
        merge_cli.main(["--method", "sa", "--base", str(wavlm_files["base"]),
                        "--models", str(wavlm_files["m1"]), "--out", str(tmp_path / "x.pth")])  # fmt: skip
    assert err.value.code == 1 and not (tmp_path / "x.pth").exists()


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError):
        layer_coefficients(4, 1.5, 0.8)
    with pytest.raises(ValueError):
        layer_coefficients(4, 0.2, 0.8, "cosine")
    assert math.isclose(layer_coefficients(1, 0.3, 0.5)[0], 0.3)
