"""Hub models without the hub: the model map, S3PRL hub URLs and cache files, one-line errors.

A compute node without internet cannot download ``wavlm_large``; two ways around it:

* the **model map**: a YAML of hub name -> local file (``wavlm_large: /models/WavLM-Large.pt``,
  ``large-v2: /models/large-v2.pt``; relative paths are relative to the map file). The stage
  engine's ``--model_map FILE`` exports it as ``$ESPNET_DELTA_MODEL_MAP``, which every process
  inherits (local jobs, Slurm jobs with ``--export=ALL``, ESPnet's DDP workers), and every
  loader reads it (:func:`espnet_delta.ssl.upstream.build_s3prl_upstream`, the ``s3prl_exact``
  frontend, :func:`espnet_delta.whisper.load.load_whisper`). A mapped S3PRL name is built
  as its architecture's ``<arch>_local`` upstream on the mapped file, which is what the hub
  function does with the file it downloads (same architecture, same weights);
  A local-file entry (``wav2vec2_local`` on ``downloads/upstreams/mms_300m.pt``) whose file is
  missing is redirected by its file stem (``mms_300m: /models/mms_300m.pt``);
* the **caches**, filled by stage 0 (``espnet_delta.bin.fetch_models``) on a machine with internet.

:func:`s3prl_hub_url` finds the URL a hub name downloads by running S3PRL's own hub
function with its download step intercepted (nothing is downloaded), so the cache file
(:func:`s3prl_cache_file`) is exactly the one S3PRL later reads.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

#: the environment variable the engine exports with ``--model_map`` (a YAML file)
MODEL_MAP_ENV = "ESPNET_DELTA_MODEL_MAP"
#: what to run when a model is missing (the engine's stage 0)
FETCH_HINT = "run './run.sh --stage 0 --stop_stage 0' on a machine with internet, or map it to a local file with --model_map"


class HubModelError(RuntimeError):
    """A hub model that is neither mapped, cached nor downloadable; the message is one line."""


def read_model_map(path) -> Dict[str, Path]:
    """hub name -> absolute file path of a model-map YAML (files need not exist yet); a missing
    file, a folder, bytes that are not UTF-8 or YAML that does not parse are one line naming it."""
    import yaml

    from espnet_delta.fileio import TableError, read_text_file, yaml_problem

    path = Path(path)
    if not path.is_file():
        raise HubModelError(f"model map {path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        data = yaml.safe_load(read_text_file(path, "model map")) or {}
    except TableError as e:  # not UTF-8: names the line
        raise HubModelError(str(e)) from None
    except yaml.YAMLError as e:
        raise HubModelError(f"model map {path}: invalid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise HubModelError(f"model map {path}: expected 'hub name: local file' lines")
    return {str(k): (path.parent / os.path.expanduser(v)).resolve() for k, v in data.items()}


def model_map(path=None) -> Dict[str, Path]:
    """The map of ``path``, else of ``$ESPNET_DELTA_MODEL_MAP``, else empty."""
    path = path or os.environ.get(MODEL_MAP_ENV)
    return read_model_map(path) if path else {}


def mapped_file(name: str, path=None) -> Optional[Path]:
    """The local file the model map gives hub name ``name``; a mapped file that is missing is an error."""
    target = model_map(path).get(name)
    if target is not None and not target.is_file():
        where = path or os.environ.get(MODEL_MAP_ENV)
        folder = " as a file (it is a folder)" if target.is_dir() else ""
        raise HubModelError(f"model {name!r}: {target} (mapped in {where}) not found{folder}")
    return target


def _hub_function(name: str):
    """S3PRL's hub function ``name``; its own hubconf module first (``wavlm_large``: s3prl.upstream.wavlm,
    about 3 s), all of ``s3prl.hub`` (about 15 s) only for names not found there."""
    import importlib

    try:
        module = importlib.import_module(f"s3prl.upstream.{name.split('_')[0]}.hubconf")
        if callable(getattr(module, name, None)):
            return getattr(module, name)
    except ImportError:
        pass
    import s3prl.hub

    if not callable(getattr(s3prl.hub, name, None)):
        raise HubModelError(f"{name!r} is not an S3PRL model name (see s3prl.nn.S3PRLUpstream.available_names())")
    return getattr(s3prl.hub, name)


def s3prl_local_name(name: str) -> str:
    """``<arch>_local`` of the S3PRL module that defines hub function ``name`` (``wavlm_large`` -> ``wavlm_local``)."""
    import importlib

    module = importlib.import_module(_hub_function(name).__module__)  # s3prl.upstream.<arch>.hubconf
    local = f"{module.__name__.split('.')[-2]}_local"
    if not callable(getattr(module, local, None)):
        raise HubModelError(f"S3PRL model {name!r}: no {local} upstream to load a mapped file with")
    return local


def mapped_local_file(path_or_url: Optional[str]) -> Optional[Path]:
    """The mapped file of a local-file entry whose file is missing and whose file stem is a map key.

    Some models have no hub name (MMS 300M: ``wav2vec2_local`` on ``downloads/upstreams/mms_300m.pt``);
    the map redirects them by the file's stem, so a dry run or an offline cluster needs no copy in
    the recipe folder. An existing file is always read as it is.
    """
    if not path_or_url or Path(path_or_url).is_file():
        return None
    return mapped_file(Path(path_or_url).stem)


def resolve_s3prl(name: str, path_or_url: Optional[str]) -> Tuple[str, Optional[str]]:
    """(S3PRL name, path_or_url) to build: a mapped hub name becomes ``<arch>_local`` + file; a
    ``*_local`` entry whose missing file's stem is mapped reads the mapped file (:func:`mapped_local_file`)."""
    if not isinstance(name, str):
        return name, path_or_url
    if name.endswith(("_local", "_custom", "_url")):
        target = mapped_local_file(path_or_url) if name.endswith("_local") else None
        return name, (str(target) if target is not None else path_or_url)
    target = mapped_file(name)
    return (s3prl_local_name(name), str(target)) if target is not None else (name, path_or_url)


class _Captured(Exception):
    pass


def s3prl_hub_url(name: str) -> str:
    """The URL S3PRL's hub function ``name`` downloads (nothing is downloaded)."""
    import s3prl.util.download as dl

    function = _hub_function(name)
    original = dl._urls_to_filepaths

    def capture(*urls, **_):
        raise _Captured(urls[0])

    patched = [m for m in list(sys.modules.values()) if getattr(m, "_urls_to_filepaths", None) is original]
    try:
        for module in patched:
            module._urls_to_filepaths = capture
        function()
    except _Captured as e:
        return str(e.args[0])
    except Exception as e:  # a hub function that needs arguments: not a hub model
        raise HubModelError(f"S3PRL model {name!r} names no hub download ({type(e).__name__}: {e})") from None
    finally:
        for module in patched:
            module._urls_to_filepaths = original
    raise HubModelError(f"S3PRL model {name!r} downloads nothing")


def s3prl_cache_file(url: str) -> Path:
    """Where S3PRL keeps the download of ``url`` (its cache dir, ``~/.cache/s3prl/download`` by default)."""
    import s3prl.util.download as dl

    return Path(dl._urls_to_filepaths(url, download=False))


@contextlib.contextmanager
def hub_errors(name: str) -> Iterator[None]:
    """Turn a failed S3PRL download of hub model ``name`` into one :class:`HubModelError` line."""
    import urllib.error

    import requests

    try:
        yield
    except (urllib.error.URLError, requests.exceptions.RequestException, ConnectionError, KeyError) as e:
        if isinstance(e, KeyError) and "Content-Length" not in str(e):  # S3PRL's fallback reads it from a 404
            raise
        reason = " ".join(str(getattr(e, "reason", e)).split())[:200] or type(e).__name__
        try:
            url = s3prl_hub_url(name)
            where = f"{url} into {s3prl_cache_file(url).parent}"
        except Exception:
            where = "the hub"
        raise HubModelError(f"S3PRL model {name!r} could not be downloaded from {where} ({reason}): {FETCH_HINT}") from None
