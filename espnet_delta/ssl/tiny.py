"""Tiny, randomly initialised SSL upstreams of the real architectures.

The build machines have no model hub, so tests and the embedded default recipe use
WavLM / HuBERT / wav2vec2 models built from S3PRL's own model classes with a small
config and saved in the exact checkpoint formats that S3PRL's ``wavlm_local``,
``hubert_local`` and ``wav2vec2_local`` upstreams load. They are "large-style"
(pre-LayerNorm transformer, layer-norm feature extractor) so that the hidden-state
conventions match wavlm_large / hubert_large_ll60k / wav2vec2_large_ll60k: the last
hidden state is taken after the encoder's final LayerNorm.

The convolutional feature extractor keeps the real kernel sizes and strides, so the
frame rate (320 samples = 20 ms) and frame counts match the real models.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from espnet_delta.fileio import torch_save_atomic

ARCHITECTURES = ("wavlm", "hubert", "wav2vec2")

#: The two containers of S3PRL local checkpoints -> the entry holding the model's state
#: dict: ``wavlm_local`` loads ``{"cfg", "model"}``; ``hubert_local`` / ``wav2vec2_local``
#: load S3PRL's fairseq-free conversion ``{"task_cfg", "model_cfg", "model_weight"[, ...]}``.
S3PRL_WAVLM = "s3prl_wavlm"
S3PRL_CONVERTED = "s3prl_converted"
S3PRL_STATE_ENTRY = {S3PRL_WAVLM: "model", S3PRL_CONVERTED: "model_weight"}

#: S3PRL upstream name that loads a local checkpoint of each architecture.
LOCAL_UPSTREAM = {
    "wavlm": "wavlm_local",
    "hubert": "hubert_local",
    "wav2vec2": "wav2vec2_local",
}


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Size of a tiny upstream; the defaults run a CTC fine-tuning in minutes on a CPU."""

    num_layers: int = 3
    embed_dim: int = 64
    ffn_dim: int = 128
    num_heads: int = 4
    conv_channels: int = 32
    conv_pos: int = 16
    conv_pos_groups: int = 4
    feature_extractor: str = "stack"

    def conv_feature_layers(self) -> str:
        """The waveform CNN, always 400 samples of receptive field and a 320-sample hop.

        ``stack``: the real seven layers (kernels 10,3,3,3,3,2,2; strides 5,2,...,2)
        with fewer channels. ``single``: one conv of kernel 400, stride 320. A frozen
        random seven-layer stack is a poor filterbank and a randomly initialised
        model learns slowly on top of it (mini_myst, 3 epochs: dev CER 0.81 with the
        frozen stack, 0.57 with a trainable single 512-channel layer), so the mini
        recipe uses ``single``; tests use ``stack`` to exercise the real frame counts.
        """
        c = self.conv_channels
        if self.feature_extractor == "stack":
            return f"[({c},10,5)] + [({c},3,2)] * 4 + [({c},2,2)] * 2"
        if self.feature_extractor == "single":
            return f"[({c},400,320)]"
        raise ValueError(f"feature_extractor={self.feature_extractor!r}; expected 'stack' or 'single'")


def _common_model_cfg(cfg: TinyConfig) -> Dict:
    return {
        "extractor_mode": "layer_norm",
        "encoder_layers": cfg.num_layers,
        "encoder_embed_dim": cfg.embed_dim,
        "encoder_ffn_embed_dim": cfg.ffn_dim,
        "encoder_attention_heads": cfg.num_heads,
        "activation_fn": "gelu",
        "layer_norm_first": True,
        "conv_feature_layers": cfg.conv_feature_layers(),
        "conv_bias": True,
        "conv_pos": cfg.conv_pos,
        "conv_pos_groups": cfg.conv_pos_groups,
        "encoder_layerdrop": 0.0,
        "final_dim": cfg.embed_dim,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
    }


def build_checkpoint(arch: str, cfg: TinyConfig = TinyConfig(), seed: int = 0) -> Dict:
    """Build a random model of ``arch`` and return its S3PRL local checkpoint dict.

    Only plain dicts, strings, numbers and tensors are stored, so the file loads with
    ``torch.load(weights_only=True)``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    model_cfg = _common_model_cfg(cfg)
    if arch == "wavlm":
        wavlm_cfg = dict(
            model_cfg,
            normalize=True,
            relative_position_embedding=True,
            num_buckets=32,
            max_distance=128,
            gru_rel_pos=True,
        )
        return build_s3prl_checkpoint(arch, wavlm_cfg, seed=seed)
    if arch == "hubert":
        task_cfg = {"label_rate": 50.0, "sample_rate": 16000, "normalize": True}
        symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(12)]]
        return build_s3prl_checkpoint(arch, dict(model_cfg, label_rate=50.0), task_cfg=task_cfg, symbols=symbols, seed=seed)
    task_cfg = {"sample_rate": 16000, "normalize": True}
    w2v_cfg = dict(model_cfg, latent_vars=16, latent_groups=2, latent_dim=0, quantize_targets=True)
    return build_s3prl_checkpoint(arch, w2v_cfg, task_cfg=task_cfg, seed=seed)


def build_s3prl_checkpoint(
    arch: str,
    model_cfg: Dict,
    *,
    task_cfg: Optional[Dict] = None,
    symbols: Optional[list] = None,
    seed: int = 0,
    copy: bool = True,
) -> Dict:
    """A random ``arch`` model of ``model_cfg`` (S3PRL's config keys) in its S3PRL local container.

    ``wavlm``: ``{"cfg", "model"}``; ``hubert``: ``{"task_cfg", "model_cfg", "model_weight",
    "dictionaries_symbols"}`` (``symbols``: one list of label symbols per dictionary);
    ``wav2vec2``: ``{"task_cfg", "model_cfg", "model_weight"}``. ``copy=False`` returns the
    model's own (detached) tensors instead of clones: no second copy of a 300M-parameter model.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    state = _detached if copy else dict
    # Seed a private generator state: never disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "wavlm":
            from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

            model = WavLM(WavLMConfig(model_cfg))
            return {"cfg": model_cfg, "model": state(model.state_dict())}
        from s3prl.upstream.utils import merge_with_parent

        if arch == "hubert":
            from s3prl.upstream.hubert.hubert_model import (
                HubertConfig,
                HubertModel,
                HubertPretrainingConfig,
            )

            model = HubertModel(
                merge_with_parent(HubertConfig, model_cfg),
                merge_with_parent(HubertPretrainingConfig, task_cfg),
                symbols,
            )
            return {
                "task_cfg": task_cfg,
                "model_cfg": model_cfg,
                "model_weight": state(model.state_dict()),
                "dictionaries_symbols": symbols,
            }
        from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

        model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, model_cfg))
        return {
            "task_cfg": task_cfg,
            "model_cfg": model_cfg,
            "model_weight": state(model.state_dict()),
        }


def _detached(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def s3prl_container(checkpoint: Any) -> Optional[str]:
    """:data:`S3PRL_WAVLM` or :data:`S3PRL_CONVERTED` for a loaded S3PRL local checkpoint,
    ``None`` for anything else (e.g. an ESPnet state dict)."""
    if not isinstance(checkpoint, Mapping):
        return None
    if "model_weight" in checkpoint and "model_cfg" in checkpoint:
        return S3PRL_CONVERTED
    if "model" in checkpoint and "cfg" in checkpoint:
        return S3PRL_WAVLM
    return None


def weights_of(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The model state dict inside an S3PRL local checkpoint of either container."""
    container = s3prl_container(checkpoint)
    if container is None:
        raise KeyError(
            "not an S3PRL wavlm/hubert/wav2vec2 local checkpoint (no 'cfg'+'model' or 'model_cfg'+'model_weight')"
        )
    return checkpoint[S3PRL_STATE_ENTRY[container]]


def make_tiny_upstream(
    arch: str,
    out_path: os.PathLike,
    *,
    seed: int = 0,
    config: TinyConfig = TinyConfig(),
    overwrite: bool = False,
) -> Path:
    """Save a tiny random ``arch`` checkpoint loadable by S3PRL's ``<arch>_local``."""
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        logging.info("tiny %s upstream exists: %s", arch, out_path)
        return out_path
    torch_save_atomic(build_checkpoint(arch, config, seed), out_path)
    logging.info("wrote tiny %s upstream (%s) to %s", arch, config, out_path)
    return out_path
