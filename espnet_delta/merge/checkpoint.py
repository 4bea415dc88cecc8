"""Read and write the checkpoint containers that model merging accepts.

Three containers are recognised (found by content, not by file name):

* ``espnet``: an ESPnet ASR checkpoint, i.e. a plain ``state_dict`` saved with
  ``torch.save`` (``exp/*/valid.loss.best.pth``). With ESPnet's S3PRL frontend the
  SSL model sits under ``frontend.upstream.upstream.model.`` (older ESPnet:
  ``frontend.upstream.model.``); models without an S3PRL frontend (e.g. Whisper)
  have no upstream prefix.
* ``s3prl_wavlm``: what S3PRL's ``wavlm_local`` loads, ``{"cfg": dict, "model": state_dict}``.
* ``s3prl_converted``: what ``hubert_local`` / ``wav2vec2_local`` load (S3PRL's
  fairseq-free conversion), ``{"task_cfg", "model_cfg", "model_weight"[, "dictionaries_symbols"]}``.

Keys of different containers are aligned through the upstream-relative name, so a
bare pre-trained S3PRL checkpoint can serve as the base of fine-tuned ESPnet ones.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from espnet_delta.fileio import atomic_path
from espnet_delta.ssl.tiny import S3PRL_STATE_ENTRY, s3prl_container
from espnet_delta.ssl.upstream import espnet_upstream_prefix

from .errors import CheckpointFormatError

ESPNET = "espnet"

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: its model state dict plus what is needed to write it back.

    ``upstream_prefix`` is where the SSL upstream's tensors start: ``""`` for a bare
    S3PRL checkpoint, e.g. ``"frontend.upstream.upstream.model."`` for ESPnet, and
    ``None`` when the checkpoint has no S3PRL upstream (all keys are ESPnet keys).
    """

    state: Dict[str, torch.Tensor]
    container: str
    upstream_prefix: Optional[str]
    name: str = "checkpoint"
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)  # S3PRL: the other entries

    def upstream_name(self, key: str) -> Optional[str]:
        """Name relative to the upstream model, or None for a non-upstream (e.g. CTC head) key."""
        if self.upstream_prefix is None or not key.startswith(self.upstream_prefix):
            return None
        return key[len(self.upstream_prefix):]

    def arch_names(self) -> List[str]:
        """The names architecture patterns are matched against (upstream-relative if any)."""
        if self.upstream_prefix is None:
            return list(self.state)
        return [k[len(self.upstream_prefix):] for k in self.state if k.startswith(self.upstream_prefix)]

    def key_in(self, key: str, ref: "Checkpoint") -> Optional[str]:
        """This checkpoint's ``key`` translated into ``ref``'s key space (None: no counterpart).

        Upstream tensors move between prefixes (bare ``""``, new or old ESPnet prefix);
        non-upstream ESPnet keys (CTC head, featurizer, ...) keep their name and have no
        counterpart in a bare upstream checkpoint.
        """
        rel = self.upstream_name(key)
        if rel is not None:
            return key if ref.upstream_prefix is None else ref.upstream_prefix + rel
        return None if ref.is_bare_upstream else key

    @property
    def is_bare_upstream(self) -> bool:
        """A bare S3PRL checkpoint: every tensor belongs to the upstream."""
        return self.container != ESPNET


def _detect_prefix(state: Mapping[str, Any], override: Optional[str], name: str) -> Optional[str]:
    if override is not None:
        if not any(k.startswith(override) for k in state):
            raise CheckpointFormatError(f"{name}: no key starts with the upstream prefix {override!r}")
        return override
    return espnet_upstream_prefix(state)


def _check_state(state: Any, where: str) -> Dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise CheckpointFormatError(f"{where}: expected a non-empty state dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(f"{where}: entry {key!r} is not a named tensor")
    return dict(state)


def from_object(
    obj: Any, name: str = "checkpoint", upstream_prefix: Optional[str] = None
) -> Checkpoint:
    """Wrap an already loaded checkpoint object (see module docstring for the formats).

    ``upstream_prefix`` overrides the detected ESPnet upstream prefix (for frontends
    other than ESPnet's S3prlFrontend); it is ignored for bare S3PRL checkpoints.
    """
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointFormatError(f"{name}: expected a dict, got {type(obj).__name__}")
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = _check_state(obj, name)
        return Checkpoint(state, ESPNET, _detect_prefix(state, upstream_prefix, name), name)
    container = s3prl_container(obj)
    if container is None:
        raise CheckpointFormatError(
            f"{name}: not an ESPnet state dict nor an S3PRL wavlm/hubert/wav2vec2 local "
            f"checkpoint; top-level keys: {sorted(map(str, obj))[:10]}"
        )
    entry = S3PRL_STATE_ENTRY[container]
    state = _check_state(obj[entry], f"{name}[{entry!r}]")
    # Keep every other entry (configs, dictionaries) in the file's order; the state
    # dict's slot holds None and is refilled on save.
    extra = {k: (None if k == entry else v) for k, v in obj.items()}
    return Checkpoint(state, container, "", name, extra)


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
        "loaded %s: %s container, %d tensors, upstream prefix %r%s",
        name,
        ckpt.container,
        len(ckpt.state),
        ckpt.upstream_prefix,
        " (memory-mapped)" if mmap else "",
    )
    return ckpt


def to_object(template: Checkpoint, state: Dict[str, torch.Tensor]) -> Any:
    """The object to save: ``state`` inside the same container as ``template``."""
    if template.container == ESPNET:
        return state
    entry = S3PRL_STATE_ENTRY[template.container]
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
