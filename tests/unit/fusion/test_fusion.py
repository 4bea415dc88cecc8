"""Fusion modules on plain tensors: dimensions, constraints, masking, constructor types."""

import pytest
import torch
import yaml
from typeguard import TypeCheckError

from espnet_delta.fusion import FusionHead, build_fusion

B, T, D = 3, 11, 16
LENGTHS = torch.tensor([11, 7, 4])


def tensors(k=1, d=D, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=gen), [torch.randn(B, T, d, generator=gen) for _ in range(k)]


@pytest.mark.parametrize(
    "name,k,other_dim,expected",
    [
        ("concat", 1, D, 2 * D),
        ("concat", 2, D, 3 * D),
        ("concat", 1, 24, D + 24),
        ("weighted", 1, D, D),
        ("xattn", 1, D, D),
        ("xattn", 1, 24, D),
        ("moe", 1, D, D),
        ("moe", 2, D, D),
    ],
)
def test_output_dims(name, k, other_dim, expected):
    ref, others = tensors(k, other_dim)
    conf = {"num_heads": 4} if name == "xattn" else {}
    fusion = build_fusion(name, D, [other_dim] * k, **conf)
    assert fusion.output_size() == expected
    assert fusion(ref, others, LENGTHS).shape == (B, T, expected)


def test_weighted_is_a_convex_combination_that_stays_in_unit_interval():
    ref, others = tensors()
    fusion = build_fusion("weighted", D, [D])
    assert float(fusion.weight.detach()) == 0.5
    torch.testing.assert_close(fusion(ref, others, LENGTHS), 0.5 * ref + 0.5 * others[0])
    opt = torch.optim.SGD(fusion.parameters(), lr=1000.0)
    for sign in (1.0, -1.0):  # push lambda hard towards 1, then towards 0
        for _ in range(20):
            opt.zero_grad()
            (sign * -(fusion(ref, others, LENGTHS) * ref).sum()).backward()
            opt.step()
            assert 0.0 <= float(fusion.weight.detach()) <= 1.0
    lam = fusion.weight.detach()
    torch.testing.assert_close(fusion(ref, others, LENGTHS), lam * ref + (1 - lam) * others[0])


def test_moe_gate_weights_sum_to_one_and_mix_experts():
    ref, others = tensors(k=2)
    fusion = build_fusion("moe", D, [D, D])
    z = fusion(ref, others, LENGTHS)
    gate = fusion.last_gate
    assert gate.shape == (B, T, 3)
    torch.testing.assert_close(gate.sum(-1), torch.ones(B, T))
    assert bool((gate >= 0).all())
    expected = gate[..., :1] * ref + gate[..., 1:2] * others[0] + gate[..., 2:3] * others[1]
    torch.testing.assert_close(z, expected)


def test_xattn_ignores_padded_keys_and_is_residual_layer_norm():
    ref, (other,) = tensors()
    fusion = build_fusion("xattn", D, [D], num_heads=4).eval()
    z = fusion(ref, [other], LENGTHS)
    garbage = other.clone()
    for b, n in enumerate(LENGTHS.tolist()):
        garbage[b, n:] = 1e3 * torch.randn(T - n, D)
    z2 = fusion(ref, [garbage], LENGTHS)
    torch.testing.assert_close(z, z2)
    attended, _ = fusion.attention(ref, other, other, key_padding_mask=torch.arange(T)[None] >= LENGTHS[:, None])
    torch.testing.assert_close(z, torch.nn.functional.layer_norm(ref + attended, (D,), fusion.norm.weight, fusion.norm.bias))


def test_single_model_fusions_refuse_several_deltas_and_unequal_dims():
    with pytest.raises(ValueError, match="exactly one"):
        build_fusion("weighted", D, [D, D])
    with pytest.raises(ValueError, match="exactly one"):
        build_fusion("xattn", D, [D, D])
    with pytest.raises(ValueError, match="equal dimensions"):
        build_fusion("moe", D, [24])
    with pytest.raises(ValueError, match="fusion='sum'"):
        build_fusion("sum", D, [D])


def test_head_normalises_then_zeroes_padding():
    ref, others = tensors()
    head = FusionHead("concat", D, [D], head_dropout=0.1).eval()
    z = head(ref, others, LENGTHS)
    assert z.shape == (B, T, 2 * D)
    for b, n in enumerate(LENGTHS.tolist()):
        assert torch.count_nonzero(z[b, n:]) == 0
        torch.testing.assert_close(z[b, :n].mean(-1), torch.zeros(n), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: build_fusion("concat", 16.0, [D]),  # a float size
        lambda: build_fusion("moe", D, ["16"]),  # a str inside other_sizes
        lambda: build_fusion("xattn", D, [D], num_heads="4"),  # fusion_conf value as a string
        lambda: build_fusion("xattn", D, [D], dropout="0.1"),
        lambda: FusionHead("concat", D, [D], head_norm="true"),
        lambda: FusionHead("concat", D, [D], fusion_conf=[("num_heads", 4)]),
    ],
)
def test_constructors_refuse_wrong_types(build):
    with pytest.raises(TypeCheckError):
        build()


def test_yaml_fusion_conf_maps_onto_constructor_keywords():
    conf = yaml.safe_load("fusion: xattn\nfusion_conf: {num_heads: 4, dropout: 0}\nhead_norm: false\nhead_dropout: 0")
    head = FusionHead(ref_size=D, other_sizes=[D], **conf)
    assert head.fusion.attention.num_heads == 4 and head.fusion.attention.dropout == 0
    assert isinstance(head.norm, torch.nn.Identity) and head.dropout.p == 0
    with pytest.raises(TypeError, match="heads"):  # an unknown fusion_conf key is not silently dropped
        FusionHead("xattn", D, [D], fusion_conf={"heads": 4})
