"""Layer interfaces (arXiv 2406.12209): sizes, parameter counts, semantics, padding.

Expected sizes and parameter counts are worked out by hand below from the paper's
definitions, not read from the modules.
"""

import pytest
import torch
from typeguard import TypeCheckError

from espnet_delta.ssl.interfaces import (
    ConcatInterface,
    HierarchicalConvInterface,
    WeightedSumInterface,
    build_interface,
    hconv_depth,
)

LS, DS = (3, 5, 13, 25), (32, 768, 1024)

# hconv by hand: depth = floor(log3 L); each conv maps n -> floor((n + 4 - 5) / 3) + 1
#   L=3:  3 <= 3 < 9   -> depth 1; 3 -> 1
#   L=5:  3 <= 5 < 9   -> depth 1; 5 -> 2
#   L=13: 9 <= 13 < 27 -> depth 2; 13 -> 5 -> 2
#   L=25: 9 <= 25 < 27 -> depth 2; 25 -> 9 -> 3
HCONV_DEPTH = {3: 1, 5: 1, 13: 2, 25: 2}
HCONV_FINAL_LENGTH = {3: 1, 5: 2, 13: 2, 25: 3}


def hconv_params(L, D):
    """Conv1d(in, out, kernel 5) has in * out * 5 weights and out biases; all convs keep D
    channels except the last, which has D // L_final."""
    last = D // HCONV_FINAL_LENGTH[L]
    if HCONV_DEPTH[L] == 1:
        return D * last * 5 + last
    return (D * D * 5 + D) + (D * last * 5 + last)


def n_trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("L", LS)
def test_hconv_depth_is_floor_log3(L):
    assert hconv_depth(L) == HCONV_DEPTH[L]
    assert [hconv_depth(n) for n in (3, 8, 9, 26, 27, 80, 81)] == [1, 1, 2, 2, 3, 3, 4]


@pytest.mark.parametrize("D", DS)
@pytest.mark.parametrize("L", LS)
def test_output_sizes_and_parameter_counts(L, D):
    sizes = {name: build_interface(name, L, D) for name in ("last", "weighted_sum", "hconv", "concat")}
    assert sizes["last"].output_size() == D and n_trainable(sizes["last"]) == 0
    assert sizes["weighted_sum"].output_size() == D and n_trainable(sizes["weighted_sum"]) == L
    assert n_trainable(build_interface("weighted_sum", L, D, layer_norm=True)) == L  # parameter-free norm
    assert sizes["concat"].output_size() == D and n_trainable(sizes["concat"]) == L * D * D + D
    assert n_trainable(build_interface("concat", L, D, output_dim=64)) == L * D * 64 + 64
    hconv = sizes["hconv"]
    assert len(hconv.convs) == HCONV_DEPTH[L]
    assert hconv.output_size() == HCONV_FINAL_LENGTH[L] * (D // HCONV_FINAL_LENGTH[L])
    assert n_trainable(hconv) == hconv_params(L, D)
    x = torch.randn(1, L, 2, D)
    for name, iface in sizes.items():
        out, _ = iface(x, torch.tensor([2]))
        assert out.shape == (1, 2, iface.output_size()), name


def test_hconv_paper_examples():
    # 25 states of 1024: 25 -> 9 -> 3, last conv 1024 // 3 = 341 channels, 3 * 341 = 1023 features
    big = HierarchicalConvInterface(25, 1024)
    assert [c.out_channels for c in big.convs] == [1024, 341] and big.output_size() == 1023
    # 13 states of 768: 13 -> 5 -> 2, last conv 384 channels, 2 * 384 = 768 features
    base = HierarchicalConvInterface(13, 768)
    assert [c.out_channels for c in base.convs] == [768, 384] and base.output_size() == 768
    assert n_trainable(base) == (768 * 768 * 5 + 768) + (768 * 384 * 5 + 384)
    out, _ = base(torch.randn(1, 13, 3, 768), torch.tensor([3]))
    assert out.shape == (1, 3, 768)


def test_hconv_convolves_over_the_layer_axis():
    """L=3, D=1: one conv, padding 2, stride 3: the only output position sees padded
    positions -2, -1 (taps 0, 1) and layers 0, 1, 2 (taps 2, 3, 4)."""
    iface = HierarchicalConvInterface(3, 1)
    with torch.no_grad():
        iface.convs[0].weight.copy_(torch.tensor([[[10.0, 20.0, 1.0, 2.0, 3.0]]]))
        iface.convs[0].bias.fill_(-1.0)
    h = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, -4.0]])  # (T=2 frames, L=3)
    x = h.T.reshape(1, 3, 2, 1)  # [B, L, T, D]
    out, _ = iface(x, torch.tensor([2]))
    expected = [max(0.0, 1 * 0.5 + 2 * -1.0 + 3 * 2.0 - 1), max(0.0, 1 * 1.0 + 2 * 1.0 + 3 * -4.0 - 1)]
    assert out.flatten().tolist() == pytest.approx(expected)  # [4.5, 0.0]: ReLU applied


def test_hconv_flattens_layer_major_and_frames_are_independent():
    torch.manual_seed(0)
    iface = HierarchicalConvInterface(5, 4)  # 5 -> 2 layers, 4 // 2 = 2 channels
    x = torch.randn(2, 5, 3, 4)
    out, _ = iface(x, torch.tensor([3, 3]))
    conv = iface.convs[0]
    for b in range(2):
        for t in range(3):
            y = torch.relu(torch.nn.functional.conv1d(x[b, :, t].T[None], conv.weight, conv.bias, stride=3, padding=2))
            # y: (1, channels 2, layers 2) -> [layer 0: c0, c1, layer 1: c0, c1]
            torch.testing.assert_close(out[b, t], y[0].T.reshape(-1))
    x2 = x.clone()
    x2[:, :, 1] += 5.0  # change frame 1 only
    out2, _ = iface(x2, torch.tensor([3, 3]))
    torch.testing.assert_close(out2[:, [0, 2]], out[:, [0, 2]])


def test_weighted_sum_weights_sum_to_one_and_start_equal():
    iface = WeightedSumInterface(5, 8)
    w = iface.layer_weights().detach()
    assert torch.allclose(w, torch.full((5,), 0.2)) and float(w.sum()) == pytest.approx(1.0)
    x = torch.randn(2, 5, 4, 8)
    out, _ = iface(x, torch.tensor([4, 4]))
    torch.testing.assert_close(out, (x[:, 0] + x[:, 1] + x[:, 2] + x[:, 3] + x[:, 4]) / 5)
    with torch.no_grad():
        iface.weights.copy_(torch.tensor([3.0, -1.0, 0.5, 2.0, -7.0]))
    assert float(iface.layer_weights().detach().sum()) == pytest.approx(1.0)
    assert bool((iface.layer_weights() > 0).all())


def test_weighted_sum_layer_norm_normalises_each_layer_before_weighting():
    iface = WeightedSumInterface(2, 4, layer_norm=True)
    h0, h1 = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 10.0, 30.0, 30.0])
    x = torch.stack([h0, h1]).reshape(1, 2, 1, 4)
    out, _ = iface(x, torch.tensor([1]))
    # (h - mean) / sqrt(var + 1e-5), biased variance: h0 mean 2.5 var 1.25; h1 mean 20 var 100
    n0 = (h0 - 2.5) / (1.25 + 1e-5) ** 0.5
    n1 = (h1 - 20.0) / (100.0 + 1e-5) ** 0.5
    torch.testing.assert_close(out.flatten(), (n0 + n1) / 2)


def test_last_and_concat_semantics():
    x = torch.randn(2, 3, 4, 5)
    out, _ = build_interface("last", 3, 5)(x, torch.tensor([4, 4]))
    torch.testing.assert_close(out, x[:, 2])
    concat = ConcatInterface(3, 5, output_dim=15)
    with torch.no_grad():
        concat.projection.weight.copy_(torch.eye(15))
        concat.projection.bias.zero_()
    out, _ = concat(x, torch.tensor([4, 4]))
    torch.testing.assert_close(out, torch.cat([x[:, 0], x[:, 1], x[:, 2]], dim=-1))


@pytest.mark.parametrize("name,conf", [("last", {}), ("weighted_sum", {}), ("weighted_sum", {"layer_norm": True}),
                                       ("hconv", {}), ("concat", {"output_dim": 6})])
def test_padded_batch_equals_alone(name, conf):
    torch.manual_seed(0)
    iface = build_interface(name, 13, 8, **conf)
    with torch.no_grad():
        for p in iface.parameters():
            p.add_(0.1 * torch.randn_like(p))  # not the (equal) initial weights
    lengths = torch.tensor([7, 4, 1])
    x = torch.randn(3, 13, 7, 8)  # padding filled with noise, not zeros
    out, out_lengths = iface(x, lengths)
    assert out_lengths.tolist() == [7, 4, 1]
    for b, n in enumerate(lengths.tolist()):
        alone, _ = iface(x[b : b + 1, :, :n], lengths[b : b + 1])
        torch.testing.assert_close(out[b, :n], alone[0], rtol=1e-5, atol=1e-6)
        assert not out[b, n:].any()  # padded frames are zero
    # a list of L [B, T, D] tensors is the same input
    listed, _ = iface([x[:, i] for i in range(13)], lengths)
    torch.testing.assert_close(listed, out)


@pytest.mark.parametrize("name", ["weighted_sum", "hconv", "concat"])
def test_every_parameter_gets_a_gradient(name):
    iface = build_interface(name, 5, 6)
    out, _ = iface(torch.randn(2, 5, 3, 6), torch.tensor([3, 2]))
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in iface.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="interface='mean'"):
        build_interface("mean", 13, 8)
    with pytest.raises(ValueError, match="at least 3 hidden states"):
        build_interface("hconv", 2, 8)
    with pytest.raises(ValueError, match="smaller than the final layer-axis length"):
        build_interface("hconv", 25, 2)
    with pytest.raises(TypeError, match="interface 'hconv'.*kernel"):
        build_interface("hconv", 13, 8, kernel=3)
    with pytest.raises(TypeCheckError):
        build_interface("weighted_sum", 13, 8, layer_norm="yes")
    with pytest.raises(TypeCheckError):
        build_interface("concat", 13, 8, output_dim=6.0)
    with pytest.raises(ValueError, match=r"built for L=13 hidden states of D=8.*\[B, 13, T, 8\]"):
        build_interface("last", 13, 8)(torch.randn(1, 12, 2, 8), torch.tensor([2]))
