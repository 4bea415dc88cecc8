"""SSHREncoder: the upper SSL layers with a language frame, layer drop/replace and Cross-CTC.

SSHR (arXiv 2309.16937) improves multilingual CTC fine-tuning of an SSL model with
three changes to its transformer stack above a middle layer k:

1. language frame: layer k's output, averaged over each utterance's valid frames,
   is prepended as frame 0, so every later layer can attend to one summary of the
   utterance (layer k is where a linear language-ID probe peaks); it is removed
   before the output, so the output has exactly the input's frames;
2. the last layers, whose content information pre-training erodes, are dropped
   (``drop_layers``) or re-initialised (``replace_layers``);
3. Cross-CTC at chosen layers j: an intermediate CTC head's posteriors P_j, projected
   to the model width, are the query of a multi-head cross-attention whose key and
   value are layer j's output; the result is added back to the frames residually.

This encoder (``encoder: sshr``) holds copies of the upstream's layers k+1..L and
continues :class:`espnet_delta.asr.frontend.sshr.SSHRFrontend`, which runs the CNN and
layers 1..k. Cross-CTC uses ESPnet's intermediate-CTC wiring unchanged: the encoder sets
``interctc_use_conditioning``, so ``ESPnetASRModel`` gives it ``conditioning_layer =
Linear(vocab, D)`` (the posterior projection) and passes its CTC module (the shared
CTC linear) to ``forward``; the encoder returns ``((out, [(j, out_j), ...]), lens)``,
and the model's ``interctc_weight`` w gives ``L = (1 - w) L_ctc + w mean_j L_ctc_j``.
Config (layer numbers are the upstream's, 1-based)::

    encoder: sshr
    encoder_conf:
      upstream: {upstream: xls_r_300m}   # the frontend's upstream
      language_frame_layer: 8            # = frontend_conf.layer (the split point k)
      language_frame: true
      drop_layers: []                    # e.g. [23, 24]
      replace_layers: []                 # e.g. [23, 24]
      cross_ctc_layers: [18, 20, 22]
      cross_ctc_heads: 4
    model_conf: {interctc_weight: 0.3}
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from typeguard import typechecked

from espnet_delta.ssl.embeddings import UpstreamSpec
from espnet_delta.ssl.layers import load_ssl_model, relative_position_bias, run_layer
from espnet_delta.ssl.upstream import use_download_dir


class CrossCTC(torch.nn.Module):
    """Multi-head cross-attention: query from projected CTC posteriors, key/value a layer's output."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"encoder_conf.cross_ctc_heads={heads} does not divide the model width {dim}")
        self.attention = torch.nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor) -> torch.Tensor:
        """query (B, T, D), memory (B, S, D), memory_pad (B, S) True at padding -> (B, T, D)."""
        out, _ = self.attention(query, memory, memory, key_padding_mask=memory_pad, need_weights=False)
        return self.dropout(out)


def fresh_init_(module: torch.nn.Module) -> torch.nn.Module:
    """Re-initialise a transformer layer as BERT-style pre-training starts (N(0, 0.02) linears)."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear):
            torch.nn.init.normal_(sub.weight, mean=0.0, std=0.02)
            if sub.bias is not None:
                torch.nn.init.zeros_(sub.bias)
        elif isinstance(sub, (torch.nn.LayerNorm, torch.nn.Embedding)):
            sub.reset_parameters()
    return module


class SSHREncoder(AbsEncoder):
    """Layers k+1..L of an S3PRL upstream + language frame, layer drop/replace, Cross-CTC."""

    @typechecked
    def __init__(
        self,
        input_size: int,
        upstream: Optional[Dict[str, Any]] = None,
        language_frame_layer: int = 8,
        language_frame: bool = True,
        drop_layers: Optional[List[int]] = None,
        replace_layers: Optional[List[int]] = None,
        cross_ctc_layers: Optional[List[int]] = None,
        cross_ctc_heads: int = 4,
        cross_ctc_dropout: float = 0.1,
        cross_ctc_attention: bool = True,
        download_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        if upstream is None:
            raise ValueError("encoder_conf.upstream is required (the frontend's upstream), e.g. {upstream: xls_r_300m}")
        use_download_dir(download_dir)
        self.spec = UpstreamSpec.from_config(upstream, "encoder_conf.upstream")
        model, _ = load_ssl_model(self.spec, "encoder_conf.upstream")
        enc = model.encoder
        n_layers = len(enc.layers)
        k = language_frame_layer
        if not 1 <= k < n_layers:
            raise ValueError(f"encoder_conf.language_frame_layer={k}: {self.spec.upstream} has {n_layers} layers")
        if input_size != enc.embedding_dim:
            raise ValueError(f"encoder input_size {input_size} != {self.spec.upstream} width {enc.embedding_dim}")
        upper = range(k + 1, n_layers + 1)
        drop, replace, cross = (sorted(set(v or [])) for v in (drop_layers, replace_layers, cross_ctc_layers))
        for key, values in (("drop_layers", drop), ("replace_layers", replace), ("cross_ctc_layers", cross)):
            bad = [i for i in values if i not in upper]
            if bad:
                raise ValueError(f"encoder_conf.{key}={bad}: layers must be in {k + 1}..{n_layers} (above language_frame_layer)")
        kept = [i for i in upper if i not in drop]
        if not kept:
            raise ValueError(f"encoder_conf.drop_layers={drop} drops every layer above {k}")
        if set(replace) & set(drop) or set(cross) & set(drop):
            raise ValueError(f"encoder_conf: layers {sorted((set(replace) | set(cross)) & set(drop))} are also dropped")
        if kept[-1] in cross:
            raise ValueError(f"encoder_conf.cross_ctc_layers: {kept[-1]} is the last layer, whose output is the main CTC's")
        self.language_frame_layer = k
        self.language_frame = language_frame
        self.kept_layers = kept
        self.replaced_layers = replace
        self.interctc_layer_idx = cross
        self.interctc_use_conditioning = bool(cross)
        self.conditioning_layer: Optional[torch.nn.Module] = None  # set by ESPnetASRModel
        self.cross_ctc_attention = cross_ctc_attention
        self._dim = int(enc.embedding_dim)
        first = enc.layers[0].self_attn
        self.rel_bias_conf = None
        if getattr(first, "has_relative_attention_bias", False):
            self.rel_bias_conf = (int(first.num_buckets), int(first.max_distance))
        for name, module in self._pretrained_parts(model).items():
            setattr(self, name, module)
        for i in replace:
            fresh_init_(self.layers[str(i)])
        self.cross_ctc = torch.nn.ModuleDict(
            {str(j): CrossCTC(self._dim, cross_ctc_heads, cross_ctc_dropout) for j in cross} if cross_ctc_attention else {}
        )
        logging.info(
            "sshr encoder: %s layers %s (dropped %s, replaced %s), language frame from layer %d: %s, Cross-CTC at %s",
            self.spec.upstream, kept, drop, replace, k, language_frame, cross or "none",
        )

    def _pretrained_parts(self, model: torch.nn.Module) -> Dict[str, Optional[torch.nn.Module]]:
        enc = model.encoder
        parts: Dict[str, Optional[torch.nn.Module]] = {
            "layers": torch.nn.ModuleDict({str(i): enc.layers[i - 1] for i in self.kept_layers}),
            "final_norm": enc.layer_norm if enc.layer_norm_first else None,
            "rel_bias": None,
        }
        if self.rel_bias_conf is not None:
            parts["rel_bias"] = copy.deepcopy(enc.layers[0].self_attn.relative_attention_bias)
        return parts

    def output_size(self) -> int:
        return self._dim

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.final_norm is None else self.final_norm(x)

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: Optional[torch.Tensor] = None,
        ctc: Optional[torch.nn.Module] = None,
    ) -> Tuple[Any, torch.Tensor, Optional[torch.Tensor]]:
        batch, frames, _ = xs_pad.shape
        pad = make_pad_mask(ilens, maxlen=frames).to(xs_pad.device)
        x = xs_pad
        offset = 0
        if self.language_frame:
            valid = (~pad).unsqueeze(-1).to(x.dtype)
            lang = (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1.0)
            x = torch.cat([lang, x], dim=1)
            pad = torch.cat([pad.new_zeros(batch, 1), pad], dim=1)
            offset = 1
        pos_bias = None
        if self.rel_bias is not None:
            pos_bias = relative_position_bias(self.rel_bias, x.size(1), batch, *self.rel_bias_conf)
        intermediate: List[Tuple[int, torch.Tensor]] = []
        x = x.transpose(0, 1)
        for name, layer in self.layers.items():
            x, pos_bias = run_layer(layer, x, pad, pos_bias)
            if int(name) not in self.interctc_layer_idx:
                continue
            h = x.transpose(0, 1)
            normed = self._norm(h)
            out = normed[:, offset:]
            intermediate.append((int(name), out))
            if ctc is None or self.conditioning_layer is None:
                raise RuntimeError("sshr encoder: Cross-CTC needs the model's ctc and conditioning_layer "
                                   "(ESPnetASRModel sets them when interctc_use_conditioning is true)")
            query = self.conditioning_layer(ctc.softmax(out))
            update = self.cross_ctc[name](query, normed, pad) if self.cross_ctc_attention else query
            x = torch.cat([h[:, :offset], h[:, offset:] + update], dim=1).transpose(0, 1)
        out = self._norm(x.transpose(0, 1))[:, offset:]
        if intermediate:
            return (out, intermediate), ilens, None
        return out, ilens, None

    def reload_pretrained_parameters(self) -> None:
        """Called by ESPnet's initialiser after ``--init``: put the upstream's kept layers back."""
        model, _ = load_ssl_model(self.spec, "encoder_conf.upstream")
        for name, module in self._pretrained_parts(model).items():
            if module is None:
                continue
            if name == "layers":
                for i, layer in module.items():
                    if int(i) not in self.replaced_layers:
                        self.layers[i].load_state_dict(layer.state_dict())
            else:
                getattr(self, name).load_state_dict(module.state_dict())
        logging.info("sshr encoder: reloaded the pre-trained layers of %s", self.spec.upstream)
