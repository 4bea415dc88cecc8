"""Read and write the checkpoint containers that model merging accepts.

Four containers are recognised (found by content, not by file name):

* ``espnet``: an ESPnet ASR checkpoint, i.e. a plain ``state_dict`` saved with
  ``torch.save`` (``exp/*/valid.wer_ctc.best.pth``). With the s3prl_exact frontend the
  SSL model sits under ``frontend.upstream.upstream.model.`` (older ESPnet:
  ``frontend.upstream.model.``); with ESPnet's Whisper encoder/decoder the whisper
  modules sit under ``encoder.encoders.`` and ``decoder.decoders.``; other models
  have no upstream.
* ``s3prl_wavlm``: what S3PRL's ``wavlm_local`` loads, ``{"cfg": dict, "model": state_dict}``.
* ``s3prl_converted``: what ``hubert_local`` / ``wav2vec2_local`` load (S3PRL's
  fairseq-free conversion), ``{"task_cfg", "model_cfg", "model_weight"[, "dictionaries_symbols"]}``.
* ``whisper``: openai-whisper's own file, ``{"dims": dict, "model_state_dict": state_dict}``
  (what ``whisper.load_model(path)`` reads; keys ``encoder.blocks.N...``, ``decoder.blocks.N...``).

Keys of different containers are aligned through the upstream-relative name (the
S3PRL model's own name; openai-whisper's name for Whisper), so a bare pre-trained
checkpoint can serve as the base of fine-tuned ESPnet ones.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from espnet_delta.fileio import atomic_path
from espnet_delta.ssl.tiny import S3PRL_STATE_ENTRY, s3prl_container
from espnet_delta.ssl.upstream import espnet_upstream_prefix

from .errors import CheckpointFormatError

ESPNET = "espnet"
WHISPER = "whisper"
#: where each bare container keeps its state dict
STATE_ENTRY = {**S3PRL_STATE_ENTRY, WHISPER: "model_state_dict"}
#: ESPnet's whisper module prefix -> openai-whisper's, with the key that shows it is there
WHISPER_PREFIXES = (
    ("encoder.encoders.", "encoder.", re.compile(r"^encoder\.encoders\.blocks\.\d+\.attn\.query\.weight$")),
    ("decoder.decoders.", "decoder.", re.compile(r"^decoder\.decoders\.blocks\.\d+\.attn\.query\.weight$")),
)

PathLike = Union[str, os.PathLike]
#: (prefix of the key in this checkpoint, prefix of the upstream-relative name)
Prefixes = Tuple[Tuple[str, str], ...]


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: its model state dict plus what is needed to write it back.

    ``prefixes`` maps stored keys to upstream-relative names: ``(("", ""),)`` for a bare
    checkpoint, e.g. ``(("frontend.upstream.upstream.model.", ""),)`` for ESPnet with
    S3PRL, ``(("encoder.encoders.", "encoder."), ("decoder.decoders.", "decoder."))`` for
    ESPnet's Whisper, and ``None`` when the checkpoint has no upstream (all keys are ESPnet keys).
    """

    state: Dict[str, torch.Tensor]
    container: str
    prefixes: Optional[Prefixes]
    name: str = "checkpoint"
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)  # bare containers: the other entries

    def upstream_name(self, key: str) -> Optional[str]:
        """Name relative to the upstream model, or None for a non-upstream (e.g. CTC head) key."""
        for own, rel in self.prefixes or ():
            if key.startswith(own):
                return rel + key[len(own):]
        return None

    def own_key(self, rel: str) -> Optional[str]:
        """The stored key of an upstream-relative name (None if no prefix covers it)."""
        for own, rel_prefix in self.prefixes or ():
            if rel.startswith(rel_prefix):
                return own + rel[len(rel_prefix):]
        return None

    def arch_names(self) -> List[str]:
        """The names architecture patterns are matched against (upstream-relative if any)."""
        if self.prefixes is None:
            return list(self.state)
        return [n for n in map(self.upstream_name, self.state) if n is not None]

    def key_in(self, key: str, ref: "Checkpoint") -> Optional[str]:
        """This checkpoint's ``key`` translated into ``ref``'s key space (None: no counterpart).

        Upstream tensors move between prefixes (bare, new or old ESPnet S3PRL prefix,
        ESPnet's or openai-whisper's Whisper names); non-upstream ESPnet keys (CTC head,
        featurizer, ...) keep their name and have no counterpart in a bare checkpoint.
        """
        rel = self.upstream_name(key)
        if rel is not None:
            return key if ref.prefixes is None else ref.own_key(rel)
        return None if ref.is_bare_upstream else key

    @property
    def is_bare_upstream(self) -> bool:
        """A bare S3PRL or openai-whisper checkpoint: every tensor belongs to the upstream."""
        return self.container != ESPNET


def _detect_prefixes(state: Mapping[str, Any], override: Optional[str], name: str) -> Optional[Prefixes]:
    if override is not None:
        if not any(k.startswith(override) for k in state):
            raise CheckpointFormatError(f"{name}: no key starts with the upstream prefix {override!r}")
        return ((override, ""),)
    prefix = espnet_upstream_prefix(state)
    if prefix is not None:
        return ((prefix, ""),)
    whisper = tuple((own, rel) for own, rel, marker in WHISPER_PREFIXES if any(marker.match(k) for k in state))
    return whisper or None


def _check_state(state: Any, where: str) -> Dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise CheckpointFormatError(f"{where}: expected a non-empty state dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(f"{where}: entry {key!r} is not a named tensor")
    return dict(state)


def _bare_container(obj: Mapping) -> Optional[str]:
    if "dims" in obj and "model_state_dict" in obj:
        return WHISPER
    return s3prl_container(obj)


def from_object(
    obj: Any, name: str = "checkpoint", upstream_prefix: Optional[str] = None
) -> Checkpoint:
    """Wrap an already loaded checkpoint object (see module docstring for the formats).

    ``upstream_prefix`` overrides the detected ESPnet upstream prefix (for frontends
    other than ESPnet's S3prlFrontend); it is ignored for bare checkpoints.
    """
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointFormatError(f"{name}: expected a dict, got {type(obj).__name__}")
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = _check_state(obj, name)
        return Checkpoint(state, ESPNET, _detect_prefixes(state, upstream_prefix, name), name)
    container = _bare_container(obj)
    if container is None:
        raise CheckpointFormatError(
            f"{name}: not an ESPnet state dict, an S3PRL wavlm/hubert/wav2vec2 local checkpoint nor an "
            f"openai-whisper checkpoint; top-level keys: {sorted(map(str, obj))[:10]}"
        )
    entry = STATE_ENTRY[container]
    state = _check_state(obj[entry], f"{name}[{entry!r}]")
    # Keep every other entry (configs, dictionaries, whisper dims) in the file's order; the
    # state dict's slot holds None and is refilled on save.
    extra = {k: (None if k == entry else v) for k, v in obj.items()}
    return Checkpoint(state, container, (("", ""),), name, extra)


def load_checkpoint(
    path: PathLike,
    name: Optional[str] = None,
    upstream_prefix: Optional[str] = None,
    allow_pickle: bool = False,
) -> Checkpoint:
    """Load a checkpoint on CPU, memory-mapped when the file is in torch's zip format.

    ``weights_only=True`` by default: the formats above hold only tensors, dicts,
    lists, strings and numbers (S3PRL's fairseq converter stores
    ``OmegaConf.to_container`` dicts, WavLM's ``cfg`` is a dict; checked on files
    written with S3PRL's model classes, not on hub downloads, which are unreachable
    here). A checkpoint that still fails (e.g. a raw fairseq one holding an
    ``argparse.Namespace``) is refused unless ``allow_pickle=True``, which unpickles
    arbitrary objects and so may run code from the file: trusted files only.
    Memory-mapping keeps the inputs out of resident memory until a tensor is read.
    """
    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such checkpoint file")
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise CheckpointFormatError(
            f"{name}: cannot be loaded with weights_only=True ({str(e).splitlines()[0]}). "
            "If the file is trusted, pass allow_pickle=True (--allow_pickle true)."
        ) from e
    ckpt = from_object(obj, name, upstream_prefix)
    logging.info(
        "loaded %s: %s container, %d tensors, upstream prefixes %s%s",
        name,
        ckpt.container,
        len(ckpt.state),
        ckpt.prefixes,
        " (memory-mapped)" if mmap else "",
    )
    return ckpt


def to_object(template: Checkpoint, state: Dict[str, torch.Tensor]) -> Any:
    """The object to save: ``state`` inside the same container as ``template``."""
    if template.container == ESPNET:
        return state
    entry = STATE_ENTRY[template.container]
    return {k: (state if k == entry else v) for k, v in template.extra.items()}


def save_checkpoint(template: Checkpoint, state: Dict[str, torch.Tensor], path: PathLike) -> Path:
    """Atomically write ``state`` in ``template``'s container.

    ``torch.save`` to a file *object* names the zip archive ``archive/`` instead of
    after the file name, so identical inputs give identical bytes wherever saved.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(to_object(template, state), f)
    return path
