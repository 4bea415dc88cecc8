"""Merging Whisper: openai-whisper checkpoints and ESPnet's Whisper encoder/decoder names,
SA merge of encoder self-attention, decoder self-attention and cross-attention Q/K/V
(and nothing else), a float16 base, re-initialised token embeddings, and task-vector transfer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import pytest
import torch

from espnet_delta.merge import (
    MergeConfig,
    Schedule,
    ShapeMismatchError,
    from_object,
    load_checkpoint,
    merge,
    merge_files,
    ops,
)

# encoder 2 layers, decoder 3 layers: each stack is scheduled over its own depth
DIMS = dict(n_mels=8, n_audio_ctx=6, n_audio_state=8, n_audio_head=2, n_audio_layer=2,
            n_vocab=12, n_text_ctx=5, n_text_state=8, n_text_head=2, n_text_layer=3)  # fmt: skip
# depth_power, lambda = 0.3, alpha = 0.7 (`bc -l`): L = 2: 0.3^0.7, 0.3; L = 3: 0.3^0.49, 0.3^0.7, 0.3
ENCODER_C = [0.430511620249934, 0.3]
DECODER_C = [0.554356845513105, 0.430511620249934, 0.3]
# what the test itself takes for Q/K/V, in openai-whisper's spelling (ESPnet's adds encoders./decoders.)
QKV = re.compile(r"^(encoder|decoder)\.(?:encoders\.|decoders\.)?blocks\.(\d+)\.(attn|cross_attn)\.(query|key|value)\.(weight|bias)$")


def whisper_state(seed: int) -> Dict[str, torch.Tensor]:
    """A tiny openai-whisper model's state dict; seed 0 is the "pre-trained" model, other
    seeds fine-tuned copies of it (seed 0 + noise)."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    model = Whisper(ModelDimensions(**DIMS))
    # openai-whisper allocates the decoder's positional embedding with torch.empty: whatever the
    # memory held (NaN or inf at times, which made this file fail now and then); set it, as
    # espnet_delta/whisper/tiny.py does
    with torch.no_grad():
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if seed:
        gen = torch.Generator().manual_seed(seed)
        state = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    return state


def espnet_keys(state: Dict[str, torch.Tensor], seed: int) -> Dict[str, torch.Tensor]:
    """The same tensors under ESPnet's OpenAIWhisperEncoder/Decoder names, plus a CTC head."""
    out = {}
    for key, value in state.items():
        stack, rest = key.split(".", 1)
        out[f"{stack}.{stack}s.{rest}"] = value
    gen = torch.Generator().manual_seed(100 + seed)
    out["ctc.ctc_lo.weight"] = torch.randn(12, 8, generator=gen)
    out["ctc.ctc_lo.bias"] = torch.randn(12, generator=gen)
    return out


def save_whisper(state: Dict[str, torch.Tensor], path: Path) -> Path:
    torch.save({"dims": dict(DIMS), "model_state_dict": state}, path)
    return path


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


def check_only_qkv_merged(out, m1, m2, base, c: Dict[str, list]) -> int:
    """Q/K/V of every layer: base + c tau_1 + (1 - c) tau_2; every other tensor: M1's bits."""
    merged = 0
    for key, value in out.items():
        m = QKV.match(key)
        if m is None:
            assert bits_equal(value, m1[key]), key
            continue
        ci = c[m.group(1)][int(m.group(2))]
        b = base[key]
        torch.testing.assert_close(value, b + ci * (m1[key] - b) + (1 - ci) * (m2[key] - b), rtol=1e-6, atol=1e-6)
        assert not torch.equal(value, m1[key])
        merged += 1
    return merged


def test_sa_merge_of_openai_whisper_checkpoints(tmp_path):
    import whisper

    base, m1, m2 = whisper_state(0), whisper_state(1), whisper_state(2)
    paths = [save_whisper(s, tmp_path / f"{n}.pt") for n, s in (("base", base), ("m1", m1), ("m2", m2))]
    out_path = tmp_path / "sa.pt"
    report = merge_files(paths[1:], out_path, MergeConfig("sa", sa_lambda=0.3, sa_alpha=0.7), base_path=paths[0], progress=False)
    assert report.architecture == "whisper"
    assert report.layer_coefs == {"encoder": pytest.approx(ENCODER_C, abs=1e-12), "decoder": pytest.approx(DECODER_C, abs=1e-12)}
    saved = torch.load(out_path, weights_only=True)
    assert list(saved) == ["dims", "model_state_dict"] and saved["dims"] == DIMS
    out = saved["model_state_dict"]
    assert list(out) == list(m1)
    merged = check_only_qkv_merged(out, m1, m2, base, {"encoder": ENCODER_C, "decoder": DECODER_C})
    # encoder: 2 layers x (query w+b, key w, value w+b); decoder: 3 layers x (attn, cross_attn) x 5
    assert merged == 2 * 5 + 3 * 2 * 5 == report.actions["merged"]
    assert {QKV.match(k).group(3) for k in out if QKV.match(k) and k.startswith("decoder.")} == {"attn", "cross_attn"}
    model = whisper.load_model(str(out_path), device="cpu")  # openai-whisper reads the merged file
    assert all(torch.equal(v, out[k]) for k, v in model.state_dict().items())
    table = (tmp_path / "merge_schedule.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in table[1:]] == [["encoder", "0"], ["encoder", "1"],
                                                            ["decoder", "0"], ["decoder", "1"], ["decoder", "2"]]  # fmt: skip


def test_espnet_whisper_models_with_a_float16_openai_whisper_base(tmp_path):
    """ESPnet-fine-tuned models (encoder.encoders.*, decoder.decoders.*, a CTC head) merged
    against the released-style pre-trained file, which holds float16 weights."""
    base16 = {k: v.half() for k, v in whisper_state(0).items()}
    base_path = save_whisper(base16, tmp_path / "base.pt")
    m1, m2 = espnet_keys(whisper_state(1), 1), espnet_keys(whisper_state(2), 2)
    base32 = {k: v.float() for k, v in espnet_keys(base16, 0).items() if not k.startswith("ctc.")}  # exact cast
    base_ckpt = load_checkpoint(base_path)
    assert base_ckpt.container == "whisper"
    ckpts = [from_object(m1, "M1"), from_object(m2, "M2")]
    assert ckpts[0].prefixes == (("encoder.encoders.", "encoder."), ("decoder.decoders.", "decoder."))

    out, report = merge(ckpts, MergeConfig("sa", sa_lambda=0.3, sa_alpha=0.7), base_ckpt)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert check_only_qkv_merged(out, m1, m2, base32, {"encoder": ENCODER_C, "decoder": DECODER_C}) == 40
    assert report.actions["head_from_m1"] == 2  # ctc.ctc_lo.{weight,bias}: no base counterpart

    out, _ = merge([from_object(m1), from_object(m2)], MergeConfig("ta", coefs=[0.5]), load_checkpoint(base_path))
    key = "decoder.decoders.blocks.1.mlp.0.weight"
    b = base32[key]
    torch.testing.assert_close(out[key], b + 0.5 * (m1[key] - b) + 0.5 * (m2[key] - b))
    assert out[key].dtype == torch.float32 and bits_equal(out["ctc.ctc_lo.bias"], m1["ctc.ctc_lo.bias"])


GROUPS = """\
- layers: [0, 0]            # encoder and decoder layer 0
  lambda: 0.3
  alpha: 0.5
- layers: [2, 2]
  stacks: [decoder]         # the encoder has 2 layers
  lambda: 0.3
  alpha: 0.9
  extra: ['conv1\\.', 'token_embedding\\.']
"""
C_03_05 = 0.547722557505166  # 0.3^0.5
C_03_09 = 0.338383461901650  # 0.3^0.9


def test_groups_on_whisper_with_a_new_token_list(tmp_path):
    """The authors' form on ESPnet Whisper models fine-tuned with a 7-token list: their token
    embedding has no task vector (re-initialised), so the group's c interpolates it directly."""
    base = whisper_state(0)
    m1, m2 = espnet_keys(whisper_state(1), 1), espnet_keys(whisper_state(2), 2)
    emb = "decoder.decoders.token_embedding.weight"
    m1[emb], m2[emb] = m1[emb][:7].clone(), m2[emb][:7].clone()
    schedule = tmp_path / "groups.yaml"
    schedule.write_text(GROUPS)
    inputs = lambda: ([from_object(m1), from_object(m2)], from_object({"dims": DIMS, "model_state_dict": base}))  # noqa: E731
    models, b = inputs()
    with pytest.raises(ShapeMismatchError, match=re.escape(emb)):
        merge(models, MergeConfig("sa", schedule=str(schedule)), b)
    models, b = inputs()
    out, report = merge(models, MergeConfig("sa", schedule=str(schedule), reinit=[r"token_embedding\."]), b)

    espnet_base = espnet_keys(base, 0)
    c = {"encoder": [C_03_05, None], "decoder": [C_03_05, None, C_03_09]}  # None: in no group, the child's
    extra = {"encoder.encoders.conv1.weight", "encoder.encoders.conv1.bias", emb}
    for key, value in out.items():
        m = QKV.match(key)
        ci = C_03_09 if key in extra else (c[m.group(1)][int(m.group(2))] if m else None)
        if ci is None:
            assert bits_equal(value, m1[key]), key
        elif key == emb:  # no base: c * theta_1 + (1 - c) * theta_2
            torch.testing.assert_close(value, C_03_09 * m1[key] + (1 - C_03_09) * m2[key])
        else:
            bk = espnet_base[key]
            torch.testing.assert_close(value, bk + ci * (m1[key] - bk) + (1 - ci) * (m2[key] - bk), rtol=1e-6, atol=1e-6)
    assert set(report.extra_tensors) == extra
    # encoder layer 0 + decoder layers 0 and 2 (x 2 attentions), 5 tensors each, + 3 extra
    assert report.actions["merged"] == 5 + 2 * 2 * 5 + 3
    assert report.layer_coefs == {"encoder": pytest.approx([C_03_05, 1.0]), "decoder": pytest.approx([C_03_05, 1.0, C_03_09])}

    models, b = inputs()  # task arithmetic: the re-initialised embedding is a head, M1's
    out, _ = merge(models, MergeConfig("ta", reinit=[r"token_embedding\."]), b)
    assert bits_equal(out[emb], m1[emb])


def test_transfer_of_a_zero_task_vector_is_the_identity():
    target = espnet_keys(whisper_state(3), 3)
    target["encoder.encoders.blocks.0.attn.query.weight"][0, 0] = -0.0  # -0.0 + 0.0 would give +0.0
    orig = espnet_keys(whisper_state(1), 1)
    augmented = {k: v.clone() for k, v in orig.items()}  # theta_aug = theta_orig: tau_aug = 0
    out, report = merge([from_object(target), from_object(augmented)], MergeConfig("transfer", coefs=[0.7]),
                        from_object(orig))  # fmt: skip
    assert list(out) == list(target) and all(bits_equal(out[k], target[k]) for k in target)
    for dtype in (torch.float32, torch.float16):
        t = torch.tensor([-0.0, 1.5, -2.25, 3.0], dtype=dtype)
        assert bits_equal(ops.add_task_vector(t, torch.zeros(4, dtype=dtype), 0.8), t)
    # a non-zero task vector moves the target by scale * tau (here exact in binary)
    moved = ops.add_task_vector(torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), 0.5)
    assert moved.tolist() == [1.25, 1.5]
    with pytest.raises(ValueError, match="shape"):
        ops.add_task_vector(torch.zeros(2), torch.zeros(3), 1.0)


def test_schedule_object_for_whisper_stacks():
    """A Schedule built in code (explicit c_i per stack) on the openai-whisper names."""
    base, m1, m2 = whisper_state(0), whisper_state(1), whisper_state(2)
    schedule = Schedule.explicit({"encoder": [0.25, 0.75], "decoder": [0.5, 0.5, 0.5]})
    wrap = lambda s: from_object({"dims": DIMS, "model_state_dict": s})  # noqa: E731
    out, _ = merge([wrap(m1), wrap(m2)], MergeConfig("sa", schedule=schedule), wrap(base))
    assert check_only_qkv_merged(out, m1, m2, base, {"encoder": [0.25, 0.75], "decoder": [0.5] * 3}) == 40
