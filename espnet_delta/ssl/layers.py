"""Run an S3PRL upstream's transformer layers i..j ourselves (fairseq-style internals).

S3PRL returns the list of all hidden states; models that change what happens
between layers (SSHR's language frame and Cross-CTC) have to call the layers one by
one instead. This module is the one place that knows how S3PRL's WavLM, HuBERT and
wav2vec2 models are laid out and how their layers are called: which modules make up
the stack, the per-layer call (WavLM passes a relative position bias along), WavLM's
bucketed position bias, and the per-utterance waveform normalisation some upstreams
expect.
"""

from __future__ import annotations

import inspect
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_delta.ssl.embeddings import UpstreamSpec
from espnet_delta.ssl.upstream import load_upstream


def load_ssl_model(spec: UpstreamSpec, where: str) -> Tuple[torch.nn.Module, bool]:
    """The S3PRL model object (WavLM / HubertModel / Wav2Vec2Model) and whether it
    expects per-utterance normalised waveforms (its expert's ``normalize`` flag)."""
    upstream = load_upstream(spec.upstream, spec.path_or_url, spec.finetuned)
    expert = upstream.upstream
    model = expert.model
    for attr in ("feature_extractor", "layer_norm", "dropout_input", "encoder"):
        if not hasattr(model, attr):
            raise ValueError(f"{where}: {spec.upstream} ({type(model).__name__}) has no {attr!r}; "
                             "SSHR needs a fairseq-style WavLM / HuBERT / wav2vec2 model")
    if getattr(model.encoder, "layer_type", "transformer") != "transformer":
        raise ValueError(f"{where}: {spec.upstream} uses {model.encoder.layer_type} layers; only transformer layers are supported")
    if hasattr(expert, "wav_normalize"):
        normalize = bool(expert.wav_normalize)
    elif hasattr(expert, "task_cfg"):
        normalize = bool(expert.task_cfg.normalize)
    else:
        normalize = bool(expert.cfg.normalize)
    if hasattr(expert, "remove_all_hooks"):
        # S3PRL's expert hooks every layer to record its output into a list that only the
        # expert's own forward clears; SSHR runs the layers itself, so the list (activations
        # and their autograd graphs) would grow by every layer of every step
        expert.remove_all_hooks()
    model.requires_grad_(True)
    return model, normalize


def takes_position_bias(layer: torch.nn.Module) -> bool:
    """WavLM layers pass a relative position bias along the stack; HuBERT / wav2vec2 layers do not."""
    return "pos_bias" in inspect.signature(layer.forward).parameters


def run_layer(
    layer: torch.nn.Module, x: torch.Tensor, pad_mask: torch.Tensor, pos_bias: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One S3PRL transformer layer on ``x`` (T, B, D); returns (output, position bias for the next layer)."""
    if takes_position_bias(layer):
        x, _, pos_bias = layer(x, self_attn_padding_mask=pad_mask, need_weights=False, pos_bias=pos_bias)
        return x, pos_bias
    return layer(x, self_attn_padding_mask=pad_mask, need_weights=False)[0], None


def relative_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5-style buckets of key position minus query position, (length, length).

    Half of the buckets hold keys to the right; within each half, distances below a
    quarter of the buckets get their own bucket and larger ones share log-spaced ones
    up to ``max_distance``.
    """
    pos = torch.arange(length)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    side = (rel > 0).long() * half
    dist = rel.abs()
    log_ratio = torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return side + torch.where(dist < exact, dist, far)


def relative_position_bias(
    embedding: torch.nn.Embedding, length: int, batch: int, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """WavLM's raw (ungated) position bias for ``length`` frames: (batch * heads, length, length)."""
    buckets = relative_buckets(length, num_buckets, max_distance).to(embedding.weight.device)
    bias = embedding(buckets).permute(2, 0, 1)  # heads, T, T
    return bias.unsqueeze(0).expand(batch, -1, -1, -1).reshape(-1, length, length)


def normalize_waveforms(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each utterance's own samples; padding stays zero."""
    out = torch.zeros_like(wavs)
    for b, n in enumerate(lengths.tolist()):
        out[b, :n] = F.layer_norm(wavs[b, :n], (n,))
    return out
