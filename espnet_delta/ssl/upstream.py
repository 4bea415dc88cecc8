"""Build and load S3PRL upstreams: hub names, local checkpoints, fine-tuned ESPnet weights.

Every place in the package that needs an SSL model goes through :func:`load_upstream`,
so the three ways of naming a model behave the same everywhere:

* an S3PRL hub name (``wavlm_large``, ``hubert_large_ll60k``, ``wav2vec2_large_ll60k``)
  for users with internet; downloads are cached under ``~/.cache/s3prl/download``;
* a local checkpoint through ``wavlm_local`` / ``hubert_local`` / ``wav2vec2_local``
  with ``path_or_url`` (named hub models ignore ``path_or_url``);
* either of the above plus ``finetuned``: an ESPnet ASR checkpoint produced by CTC
  fine-tuning with ESPnet's S3PRL frontend. Its upstream weights are copied into a
  second instance of the same architecture.

A hub name listed in the model map (``--model_map``, :mod:`espnet_delta.ssl.hub`) is built
from the mapped file; a hub download that fails is one :class:`~espnet_delta.ssl.hub.HubModelError` line.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask

from espnet_delta.ssl.hub import hub_errors, resolve_s3prl
from espnet_delta.ssl.tiny import s3prl_container, weights_of

#: Where ESPnet's S3PRL frontend keeps the SSL model inside an ASR checkpoint
#: (newest first; old ESPnet versions lacked the second ``upstream``).
ESPNET_UPSTREAM_PREFIXES = ("frontend.upstream.upstream.model.", "frontend.upstream.model.")


class CheckpointMismatchError(RuntimeError):
    """A fine-tuned checkpoint does not fit the architecture it is loaded into."""


def build_s3prl_upstream(name: str, path_or_url: Optional[str] = None, extra_conf: Optional[dict] = None):
    """Construct ``s3prl.nn.S3PRLUpstream`` without disturbing the caller's RNG.

    S3PRLUpstream's constructor seeds the global RNG (``torch.manual_seed(0)``) for a
    probe forward pass; forking the RNG keeps the caller's training reproducible.
    """
    from s3prl.nn import S3PRLUpstream

    if name not in S3PRLUpstream.available_names():
        raise ValueError(f"unknown S3PRL upstream {name!r} (see s3prl.nn.S3PRLUpstream.available_names())")
    if path_or_url is not None and not name.endswith("_local") and not name.endswith("_custom"):
        logging.warning(
            "S3PRL hub model %s ignores path_or_url=%s; use %s_local for a local checkpoint",
            name,
            path_or_url,
            name.split("_")[0],
        )
    hub_name, given = name, path_or_url
    name, path_or_url = resolve_s3prl(name, path_or_url)  # the model map (a missing local file by its stem)
    if path_or_url is not None and name.endswith("_local") and not Path(path_or_url).is_file():
        raise FileNotFoundError(f"upstream checkpoint not found: {given}")
    with torch.random.fork_rng(devices=[]), hub_errors(hub_name):
        return S3PRLUpstream(name, path_or_url=path_or_url, extra_conf=extra_conf)


def espnet_upstream_prefix(keys: Iterable[str]) -> Optional[str]:
    """The first of :data:`ESPNET_UPSTREAM_PREFIXES` that some key starts with, else ``None``."""
    keys = list(keys)
    return next((p for p in ESPNET_UPSTREAM_PREFIXES if any(k.startswith(p) for k in keys)), None)


def read_upstream_weights(checkpoint_path: str) -> Dict[str, torch.Tensor]:
    """The SSL model's weights (keys relative to the model) from a fine-tuned checkpoint.

    Accepts an ESPnet ASR checkpoint (either upstream prefix) or a bare S3PRL local
    checkpoint (either container of :func:`espnet_delta.ssl.tiny.s3prl_container`).
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"fine-tuned checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path}: expected a state dict, got {type(state).__name__}")
    if s3prl_container(state) is not None:
        return dict(weights_of(state))
    prefix = espnet_upstream_prefix(state)
    if prefix is None:
        raise CheckpointMismatchError(
            f"{path}: no SSL upstream weights found (looked for keys starting with "
            f"{' or '.join(ESPNET_UPSTREAM_PREFIXES)}, or an S3PRL 'model'/'model_weight' entry)"
        )
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_weights_into(upstream, weights: Dict[str, torch.Tensor], source: str) -> None:
    """Strictly load model weights into an S3PRLUpstream; name missing/unexpected keys."""
    model = upstream.upstream.model
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{source} does not match the {type(model).__name__} architecture: "
            f"missing keys {_head(missing)}; unexpected keys {_head(unexpected)}"
        )
    for key, tensor in weights.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointMismatchError(
                f"{source}: shape of {key} is {tuple(tensor.shape)}, the model has {tuple(expected[key].shape)}"
            )
    model.load_state_dict(weights, strict=True)


def _head(keys: List[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_upstream(
    name: str,
    path_or_url: Optional[str] = None,
    finetuned: Optional[str] = None,
    extra_conf: Optional[dict] = None,
):
    """An S3PRLUpstream, optionally with fine-tuned weights, frozen and in eval mode."""
    upstream = build_s3prl_upstream(name, path_or_url, extra_conf)
    use_exact_frame_mask(upstream)
    if finetuned is not None:
        load_weights_into(upstream, read_upstream_weights(finetuned), str(finetuned))
        logging.info("loaded fine-tuned %s weights from %s", name, finetuned)
    upstream.requires_grad_(False)
    upstream.eval()
    return upstream


def conv_strides(model: torch.nn.Module) -> List[Tuple[int, int]]:
    """(kernel, stride) of each Conv1d in the waveform feature extractor."""
    convs = [m for m in model.feature_extractor.modules() if isinstance(m, torch.nn.Conv1d)]
    return [(int(c.kernel_size[0]), int(c.stride[0])) for c in convs]


def conv_output_lengths(samples: torch.Tensor, kernels_strides: List[Tuple[int, int]]) -> torch.Tensor:
    """Frames the convolutional feature extractor computes from ``samples`` alone."""
    lengths = samples.to(torch.long)
    for kernel, stride in kernels_strides:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def _exact_forward_padding_mask(self, features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    samples = (~padding_mask).sum(-1)
    frames = conv_output_lengths(samples, conv_strides(self)).to(features.device)
    # make_pad_mask leaves a length-0 row unmasked; an utterance under one window has no frame.
    return make_pad_mask(frames, maxlen=features.size(1)) | (frames == 0)[:, None]


def use_exact_frame_mask(upstream) -> None:
    """Make WavLM/HuBERT mask exactly the frames that padding produced.

    Their fairseq-derived ``forward_padding_mask`` reshapes the sample mask into
    ``T`` equal chunks, which are not the conv frames: a frame that straddles the
    end of a short utterance in a padded batch stays unmasked, leaks through the
    positional convolution and attention, and changes every frame of that
    utterance. wav2vec2 already computes the mask from conv output lengths.
    """
    model = upstream.upstream.model
    if hasattr(model, "forward_padding_mask"):
        model.forward_padding_mask = types.MethodType(_exact_forward_padding_mask, model)


class FrozenUpstream(torch.nn.Module):
    """A frozen S3PRL upstream that stays in eval mode and out of the model's state.

    The upstream is held outside the registered submodules, so that:

    * ``model.train()`` cannot switch its dropout on (ESPnet's own S3PRL frontend
      leaves dropout active in a frozen upstream);
    * ESPnet's initialiser and optimiser never see its parameters, so neither
      ``--init`` nor ``init_param`` can clobber the fine-tuned weights;
    * checkpoints of a fusion model hold only the trainable modules (megabytes, not
      several large SSL models); the upstreams are rebuilt from the config's paths.

    Device and dtype moves (``.to()``, ``.cuda()``, ``.half()``) are forwarded.
    """

    def __init__(self, upstream) -> None:
        super().__init__()
        upstream.requires_grad_(False)
        upstream.eval()
        object.__setattr__(self, "_upstream", upstream)

    @property
    def upstream(self):
        return self._upstream

    @property
    def hidden_sizes(self) -> List[int]:
        return list(self._upstream.hidden_sizes)

    def _apply(self, fn, recurse: bool = True):
        self._upstream._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, wavs: torch.Tensor, wavs_len: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """All hidden states ``[(B, T, D)] * (N+1)`` and the per-utterance frame count ``(B,)``.

        The frame count is what the convolutional feature extractor computes from the
        utterance alone (at least 1). S3PRL reports ceil(samples / 320), one frame
        more for most lengths, and fills that frame by repeating the last one (alone)
        or from padding (in a batch); dropping it makes batched and single-utterance
        features agree.
        """
        self._upstream.eval()
        with torch.no_grad():
            hidden_states, _ = self._upstream(wavs, wavs_len)
        frames = conv_output_lengths(wavs_len, conv_strides(self._upstream.upstream.model)).clamp(min=1)
        return hidden_states, frames.to(wavs_len.device)


class _EncoderMemo:
    """The last input and output of one shared CNN feature encoder (one batch's worth)."""

    def __init__(self) -> None:
        self.key: Optional[tuple] = None
        self.input: Optional[torch.Tensor] = None
        self.output: Optional[torch.Tensor] = None
        self.calls = 0  # forwards asked for
        self.runs = 0  # forwards computed

    def clear(self) -> None:
        self.key = self.input = self.output = None


class SharedFeatureEncoder(torch.nn.Module):
    """One CNN feature encoder serving several upstreams whose encoders are bit-identical.

    The pre-trained and fine-tuned models of one upstream share the CNN when fine-tuning
    froze it (the usual recipe), so their CNN outputs on a batch are equal; running it
    once saves about a seventh of a large model's FLOPs (a third of a base one's). A
    call whose input equals the previous call's (same shape, dtype, device, autocast
    state and values: ``torch.equal``) returns the stored output, which is what running
    the same weights on the same input gives bit for bit. Only used without autograd;
    :meth:`clear` (called after each batch) drops the stored tensors.
    """

    def __init__(self, encoder: torch.nn.Module, memo: _EncoderMemo) -> None:
        super().__init__()
        self.encoder = encoder
        object.__setattr__(self, "memo", memo)  # shared between the upstreams, not a submodule

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        memo = self.memo
        memo.calls += 1
        if torch.is_grad_enabled():
            memo.runs += 1
            return self.encoder(source)
        dev = source.device.type
        key = (tuple(source.shape), source.dtype, source.device,
               torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        if memo.key == key and torch.equal(memo.input, source):
            return memo.output
        memo.runs += 1
        output = self.encoder(source)
        memo.key, memo.input, memo.output = key, source, output
        return output

    def clear(self) -> None:
        self.memo.clear()


def _feature_encoder(upstream) -> torch.nn.Module:
    encoder = upstream.upstream.model.feature_extractor
    return encoder.encoder if isinstance(encoder, SharedFeatureEncoder) else encoder


def same_feature_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Same class and configuration (kernels, strides, norms: the module repr) and every
    state tensor bit-identical (``torch.equal``: same shape, dtype and values)."""
    if type(a) is not type(b) or repr(a) != repr(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    if list(sa) != list(sb):
        return False
    return all(sa[k].dtype == sb[k].dtype and sa[k].device == sb[k].device and torch.equal(sa[k], sb[k]) for k in sa)


def share_feature_encoders(upstreams: Sequence["FrozenUpstream"], names: Sequence[str]) -> List[List[int]]:
    """Let upstreams with bit-identical CNN feature encoders run that CNN once per batch.

    Groups ``upstreams`` by :func:`same_feature_encoder` and gives every member of a
    group of two or more a :class:`SharedFeatureEncoder` around the first member's
    encoder (the others' CNN weights are then unused). Returns the groups (indices);
    an upstream whose encoder differs from every other keeps its own, untouched.
    """
    groups: List[List[int]] = []
    for i, up in enumerate(upstreams):
        enc = _feature_encoder(up.upstream)
        for group in groups:
            if same_feature_encoder(_feature_encoder(upstreams[group[0]].upstream), enc):
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        if len(group) < 2:
            continue
        encoder, memo = _feature_encoder(upstreams[group[0]].upstream), _EncoderMemo()
        for i in group:
            upstreams[i].upstream.upstream.model.feature_extractor = SharedFeatureEncoder(encoder, memo)
        logging.info("CNN feature encoder shared (bit-identical weights): %s", ", ".join(names[i] for i in group))
    return groups


def clear_shared_encoders(upstreams: Sequence["FrozenUpstream"]) -> None:
    for up in upstreams:
        encoder = up.upstream.upstream.model.feature_extractor
        if isinstance(encoder, SharedFeatureEncoder):
            encoder.clear()


def sample_rate_16k(fs, who: str) -> int:
    """ESPnet's ``fs`` (an int or a size string such as "16k") checked against the 16 kHz every
    S3PRL upstream takes; one error naming the frontend otherwise."""
    if isinstance(fs, str):
        import humanfriendly

        fs = humanfriendly.parse_size(fs)
    if fs != 16000:
        raise ValueError(f"{who}: S3PRL upstreams take 16 kHz audio, got fs={fs}")
    return int(fs)


def use_download_dir(download_dir: Optional[str]) -> None:
    """ESPnet's s3prl ``download_dir`` option: where S3PRL keeps hub checkpoints (None: its default)."""
    if download_dir is not None:
        import s3prl.util.download

        s3prl.util.download.set_dir(download_dir)
