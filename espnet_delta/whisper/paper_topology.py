"""The Whisper models the paper configs name (small, large-v2), as random openai-whisper checkpoints.

A checkpoint ``{"dims", "model_state_dict"}`` of the real dimensions loads through
``whisper.load_model(path)`` and :func:`espnet_delta.whisper.load.load_whisper` like the
downloaded file, so a dry run exercises the real model sizes without the hub. Named by:
``egs2/myst/asr1/conf/tuning/whisper_small_*.yaml`` (``whisper_model: small``) and
``egs2/myst/asr1/run.sh`` (the screening model ``--whisper_model large-v2``).

Dimensions ([W] Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", Table 1: layers, width, heads, parameters; §2.2: 80-channel log-Mel, 30 s windows):

* small: 12 layers, width 768, 12 heads (244M);
* large-v2: 32 layers, width 1280, 20 heads (1550M; v2 is large retrained, same architecture).

openai-whisper 20250625 (installed) agrees: its ``_ALIGNMENT_HEADS`` masks have
n_text_layer x n_text_head = 144 entries for small and 640 for large-v2. n_audio_ctx 1500 (30 s
of 10 ms frames after the stride-2 conv), n_text_ctx 448 and the multilingual vocabulary 51865
are those of every multilingual Whisper before large-v3 (which has 128 mels and 51866 tokens).

The narrow variants keep the layer counts, the head counts (so openai-whisper's alignment-head
masks of the hub names still fit, 12 x 12 and 32 x 20), n_mels, the contexts and the real
vocabulary (Whisper's own tokenizer works), with 4 dimensions per head: 48 and 80 wide.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import torch

from espnet_delta.whisper.tiny import MULTILINGUAL_VOCAB, TinyWhisperConfig

#: hub name -> dimensions ([W] Table 1; field names of ``whisper.model.ModelDimensions``)
TOPOLOGIES: Dict[str, TinyWhisperConfig] = {
    "small": TinyWhisperConfig(
        n_mels=80, n_audio_ctx=1500, n_audio_state=768, n_audio_head=12, n_audio_layer=12,
        n_vocab=MULTILINGUAL_VOCAB, n_text_ctx=448, n_text_state=768, n_text_head=12, n_text_layer=12,
    ),
    "large-v2": TinyWhisperConfig(
        n_mels=80, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
        n_vocab=MULTILINGUAL_VOCAB, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32,
    ),
}
#: dimensions per attention head of the narrow variants
NARROW_HEAD_DIM = 4


def narrow(dims: TinyWhisperConfig) -> TinyWhisperConfig:
    """Same layers, heads, mels, contexts and vocabulary; 4 dimensions per head."""
    return dataclasses.replace(
        dims,
        n_audio_state=dims.n_audio_head * NARROW_HEAD_DIM,
        n_text_state=dims.n_text_head * NARROW_HEAD_DIM,
    )


def topology(name: str, width: str = "full") -> TinyWhisperConfig:
    if name not in TOPOLOGIES:
        raise KeyError(f"no Whisper paper topology {name!r} (have {', '.join(TOPOLOGIES)})")
    if width not in ("full", "narrow"):
        raise ValueError(f"width={width!r}; expected 'full' or 'narrow'")
    return TOPOLOGIES[name] if width == "full" else narrow(TOPOLOGIES[name])


def parameter_count(dims: TinyWhisperConfig) -> int:
    """Parameters of ``whisper.model.Whisper(dims)`` from the dimensions alone (buffers not counted)."""

    def block(d: int, cross: bool) -> int:
        attention = 4 * d * d + 3 * d + 2 * d  # query, key (no bias), value, out; its LayerNorm
        mlp = (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * d
        return attention * (2 if cross else 1) + mlp

    a, t = dims.n_audio_state, dims.n_text_state
    encoder = (a * dims.n_mels * 3 + a) + (a * a * 3 + a) + dims.n_audio_layer * block(a, False) + 2 * a
    decoder = dims.n_vocab * t + dims.n_text_ctx * t + dims.n_text_layer * block(t, True) + 2 * t
    return encoder + decoder


def build(dims: TinyWhisperConfig, seed: int = 0) -> Dict:
    """A random Whisper of ``dims`` as ``{"dims", "model_state_dict"}`` in float16, as the released files.

    The released checkpoints hold float16 weights (small.pt 461 MiB, large-v2.pt 2.9 GB for 244M and
    1550M parameters); ``whisper.load_model`` copies them into its float32 model. The model is built
    in float16 (the default dtype switched for the constructor only), so large-v2 needs 3.1 GB, not 6.2.
    """
    from whisper.model import ModelDimensions, Whisper

    default = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(torch.float16)
        try:
            model = Whisper(ModelDimensions(**dataclasses.asdict(dims)))
        finally:
            torch.set_default_dtype(default)
        # openai-whisper leaves the decoder's learned positional embedding as torch.empty (a checkpoint
        # fills it): give it defined values, N(0, 0.01^2), as espnet_delta.whisper.tiny does.
        with torch.no_grad():
            torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
    return {"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}
