"""Load an openai-whisper model from a hub name or a local checkpoint file, offline-aware.

ESPnet's Whisper encoder and decoder accept only hub names (``assert whisper_model in
whisper.available_models()``) and, offline, fail inside urllib with a long traceback.
:func:`load_whisper` accepts either form and turns every way of not finding the model
into one :class:`WhisperLoadError` line that names the name or file and says what to do.
A hub name listed in the model map (``--model_map``, :mod:`espnet_delta.ssl.hub`) loads the mapped file.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)


class WhisperLoadError(RuntimeError):
    """A Whisper model that cannot be loaded; the message is one line."""


def default_download_dir() -> str:
    """openai-whisper's own default cache: ``$XDG_CACHE_HOME/whisper`` or ``~/.cache/whisper``."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(cache, "whisper")


def hub_file(name: str, download_dir: Optional[str] = None) -> Path:
    """Where openai-whisper keeps (or would download) hub model ``name``."""
    import whisper

    return Path(download_dir or default_download_dir()) / os.path.basename(whisper._MODELS[name])


def load_whisper(name_or_path: str, download_dir: Optional[str] = None):
    """The ``whisper.model.Whisper`` named by ``name_or_path``, on the CPU.

    A hub name (``small``, ``large-v3``, ...) is read from ``download_dir`` (openai-whisper's
    cache by default) and downloaded there when missing; an existing file is read as a
    checkpoint ``{"dims": ..., "model_state_dict": ...}`` (torch.load with weights_only).
    """
    import whisper

    from espnet_delta.ssl.hub import HubModelError, mapped_file

    try:
        mapped = mapped_file(name_or_path)
    except HubModelError as e:
        raise WhisperLoadError(str(e)) from None
    path = mapped or Path(name_or_path).expanduser()
    if path.is_file():
        try:
            model = whisper.load_model(str(path), device="cpu", download_root=download_dir)
        except (KeyError, TypeError, RuntimeError, EOFError, OSError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise WhisperLoadError(
                f"{path}: not a Whisper checkpoint with 'dims' and 'model_state_dict' ({type(e).__name__}: {reason[:200]})"
            ) from e
        logger.info("loaded Whisper checkpoint %s", path)
        return model
    if name_or_path in whisper.available_models():
        target = hub_file(name_or_path, download_dir)
        try:
            model = whisper.load_model(name_or_path, device="cpu", download_root=download_dir)
        except (urllib.error.URLError, OSError) as e:
            reason = " ".join(str(getattr(e, "reason", e)).split()) or type(e).__name__
            raise WhisperLoadError(
                f"Whisper model {name_or_path!r} is not in {target} and could not be downloaded ({reason}): "
                f"run './run.sh --stage 0 --stop_stage 0' on a machine with internet, map it with --model_map, "
                f"or set whisper_model to a local checkpoint file"
            ) from None
        logger.info("loaded Whisper %r from %s", name_or_path, target)
        return model
    if path.exists():
        raise WhisperLoadError(f"{path}: not a file (whisper_model must be a hub name or a checkpoint file)")
    raise WhisperLoadError(
        f"{name_or_path!r}: no such checkpoint file and not a Whisper model name "
        f"(names: {', '.join(whisper.available_models())})"
    )
