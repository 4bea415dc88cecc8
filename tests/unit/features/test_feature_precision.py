"""A float16 cache keeps small deltas: E_delta is taken in float32 and rounded once.

Hand-computed bounds (IEEE binary16: 11 significant bits, unit roundoff 2^-11,
smallest normal 2^-14, subnormal spacing 2^-24):

* stored delta (layout format 2): fl16(E_ft - E_pt). The float32 subtraction is exact
  or off by at most 2^-24 |delta|, rounding to float16 by at most 2^-11 |delta| (normal
  range) or half the subnormal spacing, 2^-25: |error| <= 2^-11 |delta| (1 + 2^-12) + 2^-25.
  For |delta| ~ 1e-2 that is ~ 5e-6.
* rounded operands (format 1): fl16(E_ft) - fl16(E_pt). Each operand is off by up to
  half its float16 spacing; near |E| = 10 (binade [8, 16)) the spacing is 2^-7 =
  0.0078, so the difference is off by up to 2^-7 -- the same order as the delta itself.
"""

from __future__ import annotations

import kaldiio
import numpy as np
import soundfile
import torch

from conftest import write_espnet_checkpoint
from espnet_delta.features.extract import extract_features
from espnet_delta.features.layout import FeatureLayout
from espnet_delta.ssl.upstream import conv_output_lengths

BATCH = dict(batch_seconds=4.0, batch_size=3, progress=False, device="cpu")


def spec(arch, upstreams, finetuned=None):
    return {"upstream": f"{arch}_local", "path_or_url": str(upstreams[arch]), "finetuned": finetuned and str(finetuned)}


def wav_dir(tmp_path, lengths):
    data = tmp_path / "data"
    data.mkdir()
    gen = np.random.default_rng(0)
    lines = []
    for i, n in enumerate(lengths):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, (0.1 * gen.standard_normal(n)).astype(np.float32), 16000)
        lines.append(f"u{i} {path}\n")
    (data / "wav.scp").write_text("".join(lines))
    return data


def read(out):
    return dict(kaldiio.load_scp(str(out / "feats.scp")))


def test_fp16_cache_keeps_a_small_delta_between_large_operands(tiny_upstreams, tmp_path, monkeypatch):
    """Constructed case through the real writer and reader: E_pt ~ N(0, 10^2),
    E_ft = E_pt + 1e-2 N(0, 1) (the model forwards are replaced, nothing else)."""
    conf = {"reference": spec("wavlm", tiny_upstreams),
            "others": [spec("hubert", tiny_upstreams, write_espnet_checkpoint(tiny_upstreams["hubert"], tmp_path / "h.pth"))]}
    from espnet_delta.features.config import ExtractionConfig

    extractor = ExtractionConfig.from_dict(conf).build_extractor()
    dim = extractor.reference_size
    gen = torch.Generator().manual_seed(0)
    truth = {}  # frames -> (E_ft, E_pt) in float32, as the forwards would give them

    def constructed_run(wavs, wavs_len, pick):
        frames = conv_output_lengths(wavs_len, [(400, 320)])  # one window of 400, hop 320
        t = int(frames.max())
        e_pt = 10.0 * torch.randn(len(frames), t, dim, generator=gen)
        e_ft = e_pt + 1e-2 * torch.randn(len(frames), t, dim, generator=gen)
        for i, n in enumerate(frames.tolist()):
            truth[n] = (e_ft[i, :n].clone(), e_pt[i, :n].clone())
        return [e_ft, e_pt, e_ft], frames

    monkeypatch.setattr(extractor, "_run", constructed_run)
    lengths = [16000 + 320 * k for k in range(4)]  # distinct frame counts 49..52 identify utterances
    out = tmp_path / "feats16"
    extract_features(conf, wav_dir(tmp_path, lengths), out, fp16=True, extractor=extractor, **BATCH)
    layout = FeatureLayout.load(out)
    assert layout.names == ["wavlm_local.ft", "hubert_local.delta", "hubert_local.ft"] and layout.dtype == "float16"

    worst_stored, worst_operands, n_values = 0.0, 0.0, 0
    for utt, mat in read(out).items():
        assert mat.dtype == np.float16
        e_ft, e_pt = (x.double().numpy() for x in truth[mat.shape[0]])
        exact = e_ft - e_pt  # float64: exact for float32 operands
        stored = layout.delta(mat, "hubert_local")
        assert stored.dtype == np.float32
        err = np.abs(stored.astype(np.float64) - exact)
        assert np.all(err <= 2**-11 * np.abs(exact) * (1 + 2**-12) + 2**-25)
        worst_stored = max(worst_stored, float(err.max()))
        # what format 1 gave: both operands rounded to float16, then subtracted
        operands = e_ft.astype(np.float16).astype(np.float64) - e_pt.astype(np.float16).astype(np.float64)
        worst_operands = max(worst_operands, float(np.abs(operands - exact).max()))
        n_values += exact.size
        # E_ft is stored once, rounded once too
        ft = layout.ft(mat, "hubert_local").astype(np.float64)
        assert np.all(np.abs(ft - e_ft) <= 2**-11 * np.abs(e_ft) + 2**-25)
        # E_pt read back as E_ft - E_delta: both rounded once, so off by at most their two roundings
        pt = layout.pt(mat, "hubert_local").astype(np.float64)
        assert np.all(np.abs(pt - e_pt) <= 2**-11 * (np.abs(e_ft) + np.abs(exact)) * (1 + 2**-10) + 2**-24)
    assert n_values > 6000  # 4 utterances x ~50 frames x 32 dims
    # |delta| < 0.06 here (6 sigma of 1e-2), so the stored error is below 2^-11 * 0.06 = 2.9e-5 ...
    assert worst_stored < 2**-11 * 0.06
    # ... while with rounded operands, the ~11 % of values with |E| >= 16 (spacing >= 2^-6) have
    # each operand off by a uniform error in +-2^-7, and the difference of two such errors exceeds
    # 2^-7 with probability 1/4: among ~700 values the worst is beyond 2^-7
    assert worst_operands > 2**-7
    assert worst_operands > 200 * worst_stored


def test_fp16_cache_rounds_the_fp32_cache_once(tiny_upstreams, tmp_path):
    """Real tiny models, fine-tuned = pre-trained + 1e-3 noise (a small delta): with the same
    batches the float16 cache holds exactly fl16 of the float32 cache's values, so
    |delta16 - delta32| <= 2^-11 |delta32| + 2^-25 elementwise."""

    def nudge(key, value):
        g = torch.Generator().manual_seed(len(key))
        return value + 1e-3 * torch.randn(value.shape, generator=g) if key.startswith("encoder.") else value

    ft = write_espnet_checkpoint(tiny_upstreams["hubert"], tmp_path / "ft.pth", nudge)
    conf = {"reference": spec("wavlm", tiny_upstreams), "others": [spec("hubert", tiny_upstreams, ft)]}
    data = wav_dir(tmp_path, [12000, 9000, 16000])
    extract_features(conf, data, tmp_path / "f32", **BATCH)
    extract_features(conf, data, tmp_path / "f16", fp16=True, **BATCH)
    layout32, layout16 = FeatureLayout.load(tmp_path / "f32"), FeatureLayout.load(tmp_path / "f16")
    f32, f16 = read(tmp_path / "f32"), read(tmp_path / "f16")
    smallest_ratio = np.inf
    for utt in f32:
        d32 = layout32.delta(f32[utt], "hubert_local").astype(np.float64)
        d16 = layout16.delta(f16[utt], "hubert_local").astype(np.float64)
        assert np.all(np.abs(d16 - d32) <= 2**-11 * np.abs(d32) + 2**-25)
        e_ft = layout32.ft(f32[utt], "hubert_local")
        smallest_ratio = min(smallest_ratio, float(np.abs(d32).max() / np.abs(e_ft).max()))
        assert np.abs(d32).max() > 0  # the fine-tuned twin does differ
    assert smallest_ratio < 0.1  # a small delta next to large operands, as the title says
