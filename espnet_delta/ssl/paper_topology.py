"""The exact topologies of the SSL models the paper configs name, as random S3PRL checkpoints.

No paper-scale configuration can be tried here with the real weights (no hub access, and a
dry run should not need gigabytes of downloads), but a randomly initialised model of the real
architecture, in the file format S3PRL's ``<arch>_local`` reads, exercises everything that does
not depend on the weights' values: layer counts and indices, widths, frame counts, memory, time
per step. :data:`TOPOLOGIES` lists every model a config of this project names:

* ``egs2/myst/asr1/conf/upstreams.yaml`` and ``conf/tuning/upstreams_large.yaml``:
  wavlm_large, hubert_large_ll60k, wav2vec2_large_ll60k (the fine-tuned references and deltas),
  wavlm_base and xlsr_53 (the interface study's WavLM Base and XLSR-53);
* ``egs2/myst/asr1/conf/tuning/interface_systems_paper.yaml``: hubert (S3PRL's HuBERT Base),
  wavlm_base_plus, plus the above;
* ``egs2/mini_multilingual/asr1/conf/tuning/upstreams_sshr.yaml``: xls_r_300m and mms_300m (MMS 300M,
  seed 004's model; no S3PRL hub entry: the configs read ``downloads/upstreams/mms_300m.pt`` with
  ``wav2vec2_local``).

Every :class:`SSLTopology` has a :meth:`~SSLTopology.narrow` variant for tests: the same depth,
conv kernels and strides (so the same layer indices and frame counts), relative-position buckets,
quantiser codebook sizes and file format, but 64 wide with 4 heads and 32 conv channels.

Where the numbers come from (the entries below cite these by letter):

* [TA] torchaudio 2.9.1 (installed), ``torchaudio/models/wav2vec2/model.py``: the builders
  ``wav2vec2_base``, ``wav2vec2_large_lv60k``, ``wav2vec2_xlsr_300m``, ``hubert_base``,
  ``hubert_large``, ``wavlm_base``, ``wavlm_large`` (extractor mode, conv bias, width, FFN, heads,
  layers, positional conv 128/16, WavLM buckets 320 / max distance 800, layer_norm_first), and
  ``torchaudio/pipelines/_wav2vec2/impl.py`` (the same for WAV2VEC2_XLSR53, WAV2VEC2_XLSR_300M;
  ``_normalize_waveform`` of every bundle: True for the Large models, False for the Base ones).
* [FS] fairseq's pre-training configs: ``examples/wav2vec/config/pretraining/
  wav2vec2_large_librivox.yaml`` (final_dim 768, conv_bias, layer_norm extractor, dropouts 0) and
  ``wav2vec2_base_librispeech.yaml`` (final_dim 256, dropouts 0.1), ``examples/hubert/config/
  pretrain/hubert_large_librivox.yaml`` (final_dim 768, conv stack, untie_final_proj) and
  ``hubert_base_librispeech.yaml`` (final_dim 256); the quantiser (latent_vars 320, latent_groups 2,
  latent_dim 0) and conv stack ``[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2`` are fairseq's
  ``Wav2Vec2Config`` defaults, copied by S3PRL (``s3prl/upstream/wav2vec2/wav2vec2_model.py``).
* [HB] HuBERT paper (Hsu et al. 2021, arXiv 2106.07447): K = 500 clusters for the second
  iteration and the Large model; fairseq's Dictionary adds 4 specials (<s>, <pad>, </s>, <unk>).
* [WL] WavLM (Chen et al. 2022, arXiv 2110.13900) and its converted config
  (huggingface.co/microsoft/wavlm-large config.json: gated relative position bias, dropouts 0.1).
* [MMS] fairseq ``examples/mms/MODEL_CARD.md``: MMS pre-trained at 300M and 1B; the 300M model
  has XLS-R 300M's architecture (Pratap et al. 2023, arXiv 2305.13516), which this table takes.
* File names under the hub URL: S3PRL's hubconf functions (``s3prl/upstream/*/hubconf.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

from espnet_delta.ssl.tiny import LOCAL_UPSTREAM, build_s3prl_checkpoint

#: the real waveform CNN of every model here: 7 layers, 400 samples of receptive field, hop 320 [FS]
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
#: the narrow variants' sizes (tests): 64 wide, 4 heads, 32 conv channels
NARROW = {"width": 64, "ffn": 128, "heads": 4, "conv_channels": 32}
#: HuBERT's label dictionary: 500 k-means clusters + fairseq's 4 special symbols [HB]
HUBERT_SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(500)]


@dataclasses.dataclass(frozen=True)
class SSLTopology:
    """One SSL model's architecture and the S3PRL file it is stored as (S3PRL config names in comments)."""

    name: str  # the S3PRL hub name (mms_300m: this project's name; S3PRL has none)
    arch: str  # wavlm | hubert | wav2vec2: the S3PRL <arch>_local upstream that reads the file
    url_file: Optional[str]  # the file name under S3PRL's hub URL (None: not on the hub)
    layers: int  # encoder_layers
    width: int  # encoder_embed_dim
    ffn: int  # encoder_ffn_embed_dim
    heads: int  # encoder_attention_heads
    extractor_mode: str  # "default": GroupNorm in the first conv block only; "layer_norm": in every block
    conv_bias: bool
    layer_norm_first: bool  # pre-LN transformer (Large) or post-LN (Base)
    normalize: bool  # waveform normalised to zero mean, unit variance before the CNN
    final_dim: int = 0  # pre-training projection (wav2vec2, HuBERT); WavLM's release has none
    conv_channels: int = 512
    conv_kernels: Tuple[int, ...] = CONV_KERNELS
    conv_strides: Tuple[int, ...] = CONV_STRIDES
    conv_pos: int = 128  # positional conv kernel [TA]
    conv_pos_groups: int = 16  # positional conv groups [TA]
    num_buckets: int = 0  # WavLM relative position buckets
    max_distance: int = 0  # WavLM relative position max distance
    gru_rel_pos: bool = False  # WavLM gated relative position bias
    latent_vars: int = 0  # wav2vec2 quantiser: codewords per group
    latent_groups: int = 0  # wav2vec2 quantiser: groups
    dropout: float = 0.0  # dropout, attention_dropout of the pre-training config ([FS], [WL])
    attention_dropout: float = 0.0

    @property
    def local_upstream(self) -> str:
        return LOCAL_UPSTREAM[self.arch]

    @property
    def num_hidden_states(self) -> int:
        """What S3PRL returns: the CNN features after the positional conv plus one per layer."""
        return self.layers + 1

    def narrow(self) -> "SSLTopology":
        """The same depth, conv kernels/strides, buckets, codebook and file format, 64 wide."""
        return dataclasses.replace(
            self,
            width=NARROW["width"],
            ffn=NARROW["ffn"],
            heads=NARROW["heads"],
            conv_channels=NARROW["conv_channels"],
            final_dim=min(self.final_dim, 32),
        )

    def conv_feature_layers(self) -> str:
        return repr([(self.conv_channels, k, s) for k, s in zip(self.conv_kernels, self.conv_strides)])

    def model_cfg(self) -> Dict:
        """The checkpoint's model config (S3PRL's keys; plain values only)."""
        cfg = {
            "extractor_mode": self.extractor_mode,
            "encoder_layers": self.layers,
            "encoder_embed_dim": self.width,
            "encoder_ffn_embed_dim": self.ffn,
            "encoder_attention_heads": self.heads,
            "activation_fn": "gelu",
            "layer_norm_first": self.layer_norm_first,
            "conv_feature_layers": self.conv_feature_layers(),
            "conv_bias": self.conv_bias,
            "conv_pos": self.conv_pos,
            "conv_pos_groups": self.conv_pos_groups,
            "encoder_layerdrop": 0.0,  # S3PRL's experts set it to 0 anyway
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation_dropout": 0.0,
        }
        if self.arch == "wavlm":
            return dict(
                cfg,
                normalize=self.normalize,
                relative_position_embedding=True,
                num_buckets=self.num_buckets,
                max_distance=self.max_distance,
                gru_rel_pos=self.gru_rel_pos,
            )
        cfg["final_dim"] = self.final_dim
        if self.arch == "hubert":
            return dict(cfg, label_rate=50.0, untie_final_proj=True)
        return dict(cfg, quantize_targets=True, latent_vars=self.latent_vars, latent_groups=self.latent_groups,
                    latent_dim=0)

    def task_cfg(self) -> Optional[Dict]:
        if self.arch == "wavlm":
            return None  # WavLM keeps ``normalize`` in its one cfg
        task = {"sample_rate": 16000, "normalize": self.normalize}
        return dict(task, label_rate=50.0) if self.arch == "hubert" else task

    def parameter_count(self) -> int:
        """Parameters of the model, from the dimensions alone (nothing allocated)."""
        d, f, c = self.width, self.ffn, self.conv_channels
        n = 0
        in_ch = 1
        for k in self.conv_kernels:  # the waveform CNN
            n += c * in_ch * k + (c if self.conv_bias else 0)
            in_ch = c
        n += 2 * c * (len(self.conv_kernels) if self.extractor_mode == "layer_norm" else 1)
        n += 2 * c  # LayerNorm of the CNN features
        n += (c * d + d) if c != d else 0  # post_extract_proj
        n += d  # mask_emb
        n += d * (d // self.conv_pos_groups) * self.conv_pos + self.conv_pos + d  # weight-normed positional conv
        n += 2 * d  # the encoder's LayerNorm
        layer = 4 * (d * d + d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
        if self.gru_rel_pos:
            layer += (d // self.heads) * 8 + 8 + self.heads  # grep_linear, grep_a
        n += self.layers * layer
        if self.arch == "wavlm":
            n += self.num_buckets * self.heads  # relative_attention_bias (first layer only, shared)
        elif self.arch == "hubert":
            n += (d * self.final_dim + self.final_dim) + len(HUBERT_SYMBOLS) * self.final_dim  # final_proj, label_embs
        else:
            v = self.latent_groups * self.latent_vars
            n += v * self.final_dim // self.latent_groups  # codevars (vq_dim = final_dim)
            n += c * v + v  # quantizer.weight_proj
            n += self.final_dim * self.final_dim + self.final_dim  # project_q
            n += d * self.final_dim + self.final_dim  # final_proj
        return n

    def build(self, seed: int = 0, copy: bool = False) -> Dict:
        """The random model in its S3PRL local container (``copy=False``: no second copy of the weights)."""
        symbols = [HUBERT_SYMBOLS] if self.arch == "hubert" else None
        return build_s3prl_checkpoint(
            self.arch, self.model_cfg(), task_cfg=self.task_cfg(), symbols=symbols, seed=seed, copy=copy
        )

    def config_of(self, checkpoint) -> Optional[Dict]:
        """The model config stored in a loaded checkpoint of this format (None when another format)."""
        key = "cfg" if self.arch == "wavlm" else "model_cfg"
        return checkpoint.get(key) if isinstance(checkpoint, dict) else None


_LARGE = dict(layers=24, width=1024, ffn=4096, heads=16, extractor_mode="layer_norm", layer_norm_first=True,
              normalize=True)
_BASE = dict(layers=12, width=768, ffn=3072, heads=12, extractor_mode="default", conv_bias=False,
             layer_norm_first=False, normalize=False, dropout=0.1, attention_dropout=0.1)
# wav2vec 2.0 Large: [TA] wav2vec2_large_lv60k, [FS] wav2vec2_large_librivox.yaml (final_dim 768, conv_bias)
_W2V2_LARGE = dict(_LARGE, arch="wav2vec2", conv_bias=True, final_dim=768, latent_vars=320, latent_groups=2)
_WAVLM = dict(arch="wavlm", num_buckets=320, max_distance=800, gru_rel_pos=True, dropout=0.1, attention_dropout=0.1)

TOPOLOGIES: Dict[str, SSLTopology] = {
    t.name: t
    for t in [
        # [TA] wavlm_large (layer_norm CNN without bias, pre-LN, 320 buckets / 800), [WL]
        SSLTopology("wavlm_large", url_file="wavlm_large.pt", **dict(_LARGE, conv_bias=False), **_WAVLM),
        # [TA] hubert_large (conv_bias False: fairseq's HubertConfig default, not set by [FS]), [FS] final_dim 768
        SSLTopology("hubert_large_ll60k", arch="hubert", url_file="hubert_large_ll60k.pt", conv_bias=False,
                    final_dim=768, **_LARGE),
        SSLTopology("wav2vec2_large_ll60k", url_file="wav2vec_vox_new.pt", **_W2V2_LARGE),
        # [TA] wav2vec2_xlsr_300m / WAV2VEC2_XLSR_300M: wav2vec 2.0 Large's topology
        SSLTopology("xls_r_300m", url_file="xlsr2_300m.pt", **_W2V2_LARGE),
        # [MMS]: XLS-R 300M's topology; read from downloads/upstreams/mms_300m.pt (upstreams_sshr.yaml)
        SSLTopology("mms_300m", url_file=None, **_W2V2_LARGE),
        # [TA] WAV2VEC2_XLSR53: wav2vec 2.0 Large's topology
        SSLTopology("xlsr_53", url_file="xlsr_53_56k.pt", **_W2V2_LARGE),
        # [TA] hubert_base (group-norm CNN, post-LN), [FS] hubert_base_librispeech.yaml final_dim 256
        SSLTopology("hubert", arch="hubert", url_file="hubert_base_ls960.pt", final_dim=256, **_BASE),
        # [TA] wavlm_base; Base+ has the same topology (WavLM paper, Table 1: both 94.70M)
        SSLTopology("wavlm_base", url_file="wavlm_base.pt", **dict(_BASE, **_WAVLM)),
        SSLTopology("wavlm_base_plus", url_file="wavlm_base_plus.pt", **dict(_BASE, **_WAVLM)),
    ]
}


def topology(name: str, width: str = "full") -> SSLTopology:
    """The table entry ``name`` at ``width`` ``full`` or ``narrow``."""
    if name not in TOPOLOGIES:
        raise KeyError(f"no paper topology {name!r} (have {', '.join(TOPOLOGIES)})")
    if width not in ("full", "narrow"):
        raise ValueError(f"width={width!r}; expected 'full' or 'narrow'")
    return TOPOLOGIES[name] if width == "full" else TOPOLOGIES[name].narrow()


def frames(samples: int, top: SSLTopology) -> int:
    """Frames the CNN makes of ``samples`` samples (16000 -> 49 for the real stack)."""
    for k, s in zip(top.conv_kernels, top.conv_strides):
        samples = (samples - k) // s + 1
    return samples
