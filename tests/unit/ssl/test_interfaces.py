"""Layer interfaces (arXiv 2406.12209): sizes, parameter counts, semantics, padding.

Expected sizes and parameter counts are worked out by hand below from the paper's
definitions, not read from the modules.
"""

import pytest
import torch
from typeguard import TypeCheckError

from espnet_delta.ssl.interfaces import (
    CLSPoolingInterface,
    ConcatInterface,
    HierarchicalConvInterface,
    PCAInterface,
    WeightedSumInterface,
    build_interface,
    hconv_depth,
    interface_names,
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
    # pca: nothing trainable, output_dim (default D) outputs; cls_pooling: query D, key D*D (no bias),
    # value and output D*D + D each = 3 D^2 + 3 D
    sizes["pca"], sizes["cls_pooling"] = build_interface("pca", L, D), build_interface("cls_pooling", L, D)
    assert sizes["pca"].output_size() == D and n_trainable(sizes["pca"]) == 0
    assert build_interface("pca", L, D, output_dim=2).output_size() == 2
    assert sizes["cls_pooling"].output_size() == D and n_trainable(sizes["cls_pooling"]) == 3 * D * D + 3 * D
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
                                       ("hconv", {}), ("concat", {"output_dim": 6}),
                                       ("pca", {"output_dim": 6, "fit_frames": 6}), ("cls_pooling", {"num_heads": 2})])
def test_padded_batch_equals_alone(name, conf):
    torch.manual_seed(0)
    iface = build_interface(name, 13, 8, **conf)
    with torch.no_grad():
        for p in iface.parameters():
            p.add_(0.1 * torch.randn_like(p))  # not the (equal) initial weights
    lengths = torch.tensor([7, 4, 1])
    x = torch.randn(3, 13, 7, 8)  # padding filled with noise, not zeros
    if name == "pca":
        iface.train()(torch.randn(2, 13, 5, 8), torch.tensor([5, 5]))  # fit on 6 of 10 frames, then fixed
    out, out_lengths = iface(x, lengths)
    assert out_lengths.tolist() == [7, 4, 1]
    for b, n in enumerate(lengths.tolist()):
        alone, _ = iface(x[b : b + 1, :, :n], lengths[b : b + 1])
        torch.testing.assert_close(out[b, :n], alone[0], rtol=1e-5, atol=1e-6)
        assert not out[b, n:].any()  # padded frames are zero
    # a list of L [B, T, D] tensors is the same input
    listed, _ = iface([x[:, i] for i in range(13)], lengths)
    torch.testing.assert_close(listed, out)


@pytest.mark.parametrize("name", ["weighted_sum", "hconv", "concat", "cls_pooling"])
def test_every_parameter_gets_a_gradient(name):
    iface = build_interface(name, 5, 6)
    if name == "cls_pooling":  # the query starts at zero, where the keys get no gradient yet
        with torch.no_grad():
            iface.query.normal_()
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
    with pytest.raises(ValueError, match="fit_frames=3 is smaller than output_dim=4"):
        build_interface("pca", 2, 4, fit_frames=3)
    with pytest.raises(ValueError, match=r"output_dim must be in \[1, L \* D = 8\]"):
        build_interface("pca", 2, 4, output_dim=9)
    with pytest.raises(ValueError, match="num_heads=3 must divide D=8"):
        build_interface("cls_pooling", 2, 8, num_heads=3)
    with pytest.raises(TypeCheckError):
        build_interface("pca", 2, 4, fit_frames="many")


def test_registered_names():
    assert interface_names() == ["last", "weighted_sum", "hconv", "concat", "pca", "cls_pooling"]


# ---- PCA: the concatenation of the L states per frame, fitted on training frames, then fixed
def frames_as_states(points):
    """Frames of 2 values as L = 2 states of D = 1: [B=1, L=2, T, 1]; the concatenation is the point."""
    return torch.tensor(points, dtype=torch.float32).T.reshape(1, 2, -1, 1)


# points a (1, 1) + b (1, -1) + (5, -2): a = 3, 1, -1, -3 along (1, 1)/sqrt(2), a small b = +-0.1
# along (1, -1)/sqrt(2), uncorrelated with a (sum a b = 0.3 - 0.1 + 0.1 - 0.3 = 0, sum b = 0)
POINTS = [[5 + a + b, -2 + a - b] for a, b in [(3, 0.1), (1, -0.1), (-1, -0.1), (-3, 0.1)]]


def test_pca_finds_the_known_principal_direction():
    pca = PCAInterface(2, 1, output_dim=2, fit_frames=4).train()
    pca(frames_as_states(POINTS), torch.tensor([4]))
    assert pca.fitted and float(pca.fixed_frames) == 4
    # by hand: mean (5, -2); centred points a (1, 1) + b (1, -1), var along (1,1)/sqrt2 = 2 (9+1+1+9)/4 = 10,
    # along (1,-1)/sqrt2 = 2 * 0.01 = 0.02: first direction (1, 1)/sqrt2, second (1, -1)/sqrt2
    # (signs: the first entry that is not ~0 positive)
    r = 2 ** -0.5
    torch.testing.assert_close(pca.fixed_mean, torch.tensor([5.0, -2.0]))
    torch.testing.assert_close(pca.fixed_components, torch.tensor([[r, r], [r, -r]]))
    pca.eval()
    out, _ = pca(frames_as_states([[8.0, 1.0], [5.0, -2.0], [5.5, -2.5]]), torch.tensor([3]))
    # (8, 1) - mean = (3, 3): (6 / sqrt2, 0); the mean -> 0; (0.5, -0.5): (0, 1 / sqrt2)
    torch.testing.assert_close(out[0], torch.tensor([[6 * r, 0.0], [0.0, 0.0], [0.0, 2 * 0.5 * r]]))


def test_pca_fits_on_the_first_valid_training_frames_only():
    pca = PCAInterface(2, 1, output_dim=1, fit_frames=4).train()
    x = frames_as_states(POINTS[:2] + [[1e3, -1e3]] + POINTS[2:] + [[7e3, 7e3]])  # frames 2 and 5: padding
    x = torch.cat([x[:, :, :3], x[:, :, 3:]], dim=0)  # two utterances of 3 frames, 2 valid each
    pca(x, torch.tensor([2, 2]))
    assert float(pca.fixed_frames) == 4
    torch.testing.assert_close(pca.fixed_mean, torch.tensor([5.0, -2.0]))  # the mean of POINTS, not the padding
    # a later batch (still training) changes nothing: the fit is fixed
    pca(torch.randn(3, 2, 5, 1) * 100, torch.tensor([5, 5, 5]))
    torch.testing.assert_close(pca.fixed_mean, torch.tensor([5.0, -2.0]))


def test_pca_collects_over_batches_and_eval_freezes_a_partial_collection():
    pca = PCAInterface(2, 1, output_dim=1, fit_frames=4).train()
    pca(frames_as_states(POINTS[:2]), torch.tensor([2]))
    assert not pca.fitted  # 2 of 4 frames: a provisional fit, refitted with the next batch
    pca(frames_as_states(POINTS[2:] + [[0.0, 0.0]]), torch.tensor([3]))  # takes 2 more: 4 of 4
    assert float(pca.fixed_frames) == 4
    torch.testing.assert_close(pca.fixed_mean, torch.tensor([5.0, -2.0]))
    partial = PCAInterface(2, 1, output_dim=1, fit_frames=100).train()
    partial(frames_as_states(POINTS), torch.tensor([4]))
    partial.eval()(frames_as_states(POINTS), torch.tensor([4]))
    assert float(partial.fixed_frames) == 4  # frozen on the 4 frames collected
    with pytest.raises(RuntimeError, match="pca interface: not fitted"):
        PCAInterface(2, 1).eval()(frames_as_states(POINTS), torch.tensor([4]))


def test_pca_stays_fixed_through_an_optimizer_step_and_reloads_without_refit():
    torch.manual_seed(0)
    pca = PCAInterface(3, 4, output_dim=2, fit_frames=20).train()
    downstream = torch.nn.Linear(2, 1)
    x = torch.randn(2, 3, 10, 4)
    pca(x, torch.tensor([10, 10]))
    fitted = {k: v.clone() for k, v in pca.state_dict().items()}
    assert sorted(fitted) == ["fixed_components", "fixed_frames", "fixed_mean"] and not list(pca.parameters())
    params = list(pca.parameters()) + list(downstream.parameters())
    opt = torch.optim.SGD(params, lr=1.0)
    before, _ = pca(x, torch.tensor([10, 10]))
    out, _ = pca(torch.randn(2, 3, 10, 4), torch.tensor([10, 10]))
    downstream(out).pow(2).sum().backward()
    opt.step()
    for k, v in pca.state_dict().items():
        assert torch.equal(v, fitted[k]), k
    after, _ = pca(x, torch.tensor([10, 10]))
    assert torch.equal(before, after)
    fresh = PCAInterface(3, 4, output_dim=2, fit_frames=20)
    fresh.load_state_dict(pca.state_dict())
    fresh.eval()
    reloaded, _ = fresh(x, torch.tensor([10, 10]))
    assert torch.equal(reloaded, after)


# ---- CLS pooling: a learned query token attending over the layer axis of each frame
def test_cls_pooling_equals_the_softmax_weighted_average_by_hand():
    import math

    iface = CLSPoolingInterface(3, 2)
    with torch.no_grad():
        for lin in (iface.key, iface.value, iface.out):
            lin.weight.copy_(torch.eye(2))
        iface.value.bias.zero_()
        iface.out.bias.zero_()
        iface.query.copy_(torch.tensor([1.0, 2.0]))
    h = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # the 3 layer vectors of one frame
    x = torch.tensor(h).reshape(1, 3, 1, 2)
    out, _ = iface(x, torch.tensor([1]))
    # scores q . h_l / sqrt(2) = 2/sqrt2, 2/sqrt2, 3/sqrt2
    e = [math.exp(2 / math.sqrt(2)), math.exp(2 / math.sqrt(2)), math.exp(3 / math.sqrt(2))]
    w = [v / sum(e) for v in e]
    expected = [sum(w[i] * h[i][j] for i in range(3)) for j in range(2)]
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_cls_pooling_heads_attend_separately_and_start_at_the_mean():
    import math

    iface = CLSPoolingInterface(2, 2, num_heads=2)  # head 0 sees feature 0, head 1 feature 1
    with torch.no_grad():
        for lin in (iface.key, iface.value, iface.out):
            lin.weight.copy_(torch.eye(2))
        iface.value.bias.zero_()
        iface.out.bias.zero_()
    h = [[1.0, 4.0], [3.0, -2.0]]
    x = torch.tensor(h).reshape(1, 2, 1, 2)
    out, _ = iface(x, torch.tensor([1]))
    assert out.flatten().tolist() == pytest.approx([2.0, 1.0])  # query 0: the mean of the layers
    with torch.no_grad():
        iface.query.copy_(torch.tensor([1.0, -1.0]))
    out, _ = iface(x, torch.tensor([1]))
    # head dim 1, scale 1: head 0 scores 1, 3; head 1 scores -4, 2
    w0 = math.exp(3) / (math.exp(1) + math.exp(3))
    w1 = math.exp(2) / (math.exp(-4) + math.exp(2))
    expected = [(1 - w0) * 1 + w0 * 3, (1 - w1) * 4 + w1 * -2]
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_pca_with_fewer_frames_than_features_matches_an_svd():
    """Paper scale fits fewer frames (10,000) than features (25 x 1024): the Gram-matrix path.
    Reference: the right singular vectors of the centred frames (torch.linalg.svd), up to sign."""
    torch.manual_seed(0)
    scales = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    frames = torch.randn(6, 12, dtype=torch.float64) * scales  # 6 frames of L = 3 x D = 4
    pca = PCAInterface(3, 4, output_dim=3, fit_frames=6).train()
    pca(frames.float().reshape(1, 6, 3, 4).transpose(1, 2), torch.tensor([6]))
    _, _, vh = torch.linalg.svd(frames - frames.mean(0), full_matrices=False)
    for j in range(3):
        ref = vh[j] * torch.sign(vh[j][vh[j].abs() > 1e-6][0])  # first entry that is not ~0 positive
        torch.testing.assert_close(pca.fixed_components[:, j].double(), ref, atol=1e-5, rtol=0)
    # 6 frames span at most 5 centred directions: asking for 6 leaves the last one zero
    wide = PCAInterface(3, 4, output_dim=6, fit_frames=6).train()
    wide(frames.float().reshape(1, 6, 3, 4).transpose(1, 2), torch.tensor([6]))
    assert not wide.fixed_components[:, 5].any() and wide.fixed_components[:, 4].abs().sum() > 0.5
