"""Architecture-aware parameter names: which tensors are attention Q/K/V of which layer.

Every name pattern the merge code knows lives in :data:`NAME_PATTERNS`. Patterns
match *upstream-relative* names (an ESPnet checkpoint's S3PRL prefix is stripped
first, see :mod:`espnet_delta.merge.checkpoint`); Whisper tensors are matched in
both openai-whisper's spelling (``encoder.blocks.N``) and ESPnet's
(``encoder.encoders.blocks.N``). Each stack (Whisper: encoder, decoder) has its own
layer count.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterable, Optional, Tuple

_FAIRSEQ_LAYER = r"^encoder\.layers\.(?P<layer>\d+)\."
_FAIRSEQ_QKV = r"^encoder\.layers\.(?P<layer>\d+)\.self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)$"
# wav2vec2 conformer variant (ESPnet-style attention inside S3PRL's wav2vec2 model)
_W2V_CONFORMER_QKV = r"^encoder\.layers\.(?P<layer>\d+)\.self_attn\.linear_(q|k|v)\.(weight|bias)$"
# Whisper stacks: openai-whisper's "encoder." / "decoder.", or ESPnet's "encoder.encoders." /
# "decoder.decoders." (the whisper module's attribute inside ESPnet's encoder/decoder)
_WHISPER_ENC = r"^encoder\.(?:encoders\.)?"
_WHISPER_DEC = r"^decoder\.(?:decoders\.)?"


@dataclasses.dataclass(frozen=True)
class NamePattern:
    """One row of the name table.

    role ``marker``: any key matching it identifies ``arch`` (first arch in table
    order wins); role ``layer``: any tensor of layer ``(?P<layer>)`` of ``stack``
    (used to count layers); role ``qkv``: a query/key/value projection weight or
    bias of layer ``(?P<layer>)`` of ``stack`` (the tensors SA merging mixes).
    """

    arch: str
    role: str
    stack: str
    regex: str

    @property
    def compiled(self) -> "re.Pattern[str]":
        return _compile(self.regex)


# fmt: off
#: arch, role, stack, regex. Detection order = table order (specific before generic).
NAME_PATTERNS: Tuple[NamePattern, ...] = (
    # Whisper: openai-whisper's own names (encoder.blocks.N / decoder.blocks.N) and ESPnet's
    # (OpenAIWhisperEncoder keeps the whisper encoder at encoder.encoders, OpenAIWhisperDecoder
    # the decoder at decoder.decoders: espnet2/asr/{encoder/whisper_encoder,decoder/whisper_decoder}.py).
    # `key` has no bias; `out` is the output projection (not merged); the decoder's Q/K/V are its
    # self-attention (attn) and its cross-attention (cross_attn).
    NamePattern("whisper", "marker", "", rf"^(?:{_WHISPER_ENC[1:]}|{_WHISPER_DEC[1:]})blocks\.\d+\.attn\.query\.weight$"),
    NamePattern("whisper", "layer", "encoder", rf"{_WHISPER_ENC}blocks\.(?P<layer>\d+)\."),
    NamePattern("whisper", "qkv", "encoder", rf"{_WHISPER_ENC}blocks\.(?P<layer>\d+)\.attn\.(query|key|value)\.(weight|bias)$"),
    NamePattern("whisper", "layer", "decoder", rf"{_WHISPER_DEC}blocks\.(?P<layer>\d+)\."),
    NamePattern("whisper", "qkv", "decoder", rf"{_WHISPER_DEC}blocks\.(?P<layer>\d+)\.(attn|cross_attn)\.(query|key|value)\.(weight|bias)$"),
    # WavLM (s3prl/upstream/wavlm/WavLM.py): gated relative position bias params are not Q/K/V.
    NamePattern("wavlm", "marker", "", r"^encoder\.layers\.\d+\.self_attn\.(relative_attention_bias|grep_linear|grep_a)\b"),
    NamePattern("wavlm", "layer", "encoder", _FAIRSEQ_LAYER),
    NamePattern("wavlm", "qkv", "encoder", _FAIRSEQ_QKV),
    # HuBERT (s3prl/upstream/hubert/hubert_model.py): pre-training label embeddings.
    NamePattern("hubert", "marker", "", r"^label_embs_concat$"),
    NamePattern("hubert", "layer", "encoder", _FAIRSEQ_LAYER),
    NamePattern("hubert", "qkv", "encoder", _FAIRSEQ_QKV),
    # wav2vec 2.0 (s3prl/upstream/wav2vec2/wav2vec2_model.py): quantizer / target projection.
    NamePattern("wav2vec2", "marker", "", r"^(project_q|quantizer)\."),
    NamePattern("wav2vec2", "layer", "encoder", _FAIRSEQ_LAYER),
    NamePattern("wav2vec2", "qkv", "encoder", _FAIRSEQ_QKV),
    NamePattern("wav2vec2", "qkv", "encoder", _W2V_CONFORMER_QKV),
    # Any other fairseq-style SSL transformer (e.g. WavLM without relative position bias,
    # or a HuBERT/wav2vec2 whose pre-training heads were removed).
    NamePattern("fairseq_transformer", "marker", "", r"^encoder\.layers\.\d+\.self_attn\.q_proj\.weight$"),
    NamePattern("fairseq_transformer", "layer", "encoder", _FAIRSEQ_LAYER),
    NamePattern("fairseq_transformer", "qkv", "encoder", _FAIRSEQ_QKV),
)
# fmt: on

ARCHITECTURES: Tuple[str, ...] = tuple(dict.fromkeys(p.arch for p in NAME_PATTERNS))

_CACHE: Dict[str, "re.Pattern[str]"] = {}


def _compile(regex: str) -> "re.Pattern[str]":
    if regex not in _CACHE:
        _CACHE[regex] = re.compile(regex)
    return _CACHE[regex]


def _rows(arch: str, role: str):
    return [p for p in NAME_PATTERNS if p.arch == arch and p.role == role]


def detect_architecture(names: Iterable[str]) -> Tuple[Optional[str], Optional[str]]:
    """``(arch, evidence)``: the first table arch with a marker among ``names`` and the
    first name that matched it, or ``(None, None)`` for an unknown architecture."""
    names = list(names)
    for arch in ARCHITECTURES:
        for row in _rows(arch, "marker"):
            for name in names:
                if row.compiled.search(name):
                    return arch, name
    return None, None


def num_layers(arch: str, names: Iterable[str]) -> Dict[str, int]:
    """Number of transformer layers per stack (1 + highest layer index seen)."""
    counts: Dict[str, int] = {}
    rows = _rows(arch, "layer")
    for name in names:
        for row in rows:
            m = row.compiled.match(name)
            if m:
                counts[row.stack] = max(counts.get(row.stack, 0), int(m.group("layer")) + 1)
    return counts


def attention_qkv_layer(arch: str, name: str) -> Optional[Tuple[str, int]]:
    """``(stack, layer)`` if ``name`` is a Q/K/V projection weight/bias of ``arch``, else None."""
    for row in _rows(arch, "qkv"):
        m = row.compiled.match(name)
        if m:
            return row.stack, int(m.group("layer"))
    return None
