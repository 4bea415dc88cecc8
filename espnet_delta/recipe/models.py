"""The hub models a recipe's options need, where each one is looked for, and its download.

Stage 0 (``espnet_delta.bin.fetch_models``) fetches what :func:`needed_models` lists for
every stage; each later stage checks the models of its own stages with the same list
before it starts a job, so the fetch and the check cannot disagree. A model is needed by:

* stage 1: the Whisper screening model ``--whisper_model`` while ``--whisper_hyp`` is missing;
* stages 4-5: the ``--upstream_conf`` entries of ``--upstreams`` (and of the adult models with
  ``--adult_train_set``) when ``--finetune_config`` is set, the reference for ``--probe_config``
  and ``--sshr_systems``, each ``--interface_systems`` system's upstream (or the reference and
  its deltas), the Whisper fine-tuning model (``--whisper_model``, else ``--whisper_config``'s);
* stages 6 and 10: the entries of ``--upstreams`` (the pre-trained bases of the deltas);
* stage 8 (with ``--adult_train_set``): the reference, and the Whisper model with ``--whisper_config``.

Where a model is looked for: the model map (:mod:`espnet_delta.ssl.hub`), else the cache
its loader reads: S3PRL's download dir for S3PRL names, the Whisper download root
(openai-whisper's cache, or the config's ``download_dir``) for Whisper names. Entries that
name a local file (``wavlm_local`` + ``path_or_url``, a Whisper checkpoint path) are checked
for existence and never downloaded.

``$ESPNET_DELTA_HUB_BASE_URL`` (or ``fetch_models --base_url``) replaces the scheme and host
of every hub URL, keeping the path: it exists for the tests (a loopback server with the
hubs' URL layout) and for a local mirror.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from espnet_delta.fileio import load_yaml
from espnet_delta.ssl.hub import FETCH_HINT, HubModelError, model_map, s3prl_cache_file, s3prl_hub_url

BASE_URL_ENV = "ESPNET_DELTA_HUB_BASE_URL"
STAGES = (1, 4, 5, 6, 8, 10)
LOCAL_SUFFIXES = ("_local", "_custom", "_url")


@dataclasses.dataclass
class Model:
    """One model: ``kind`` s3prl | whisper | file, its name (or path), who named it, which stages need it."""

    kind: str
    name: str
    origin: str
    stages: Tuple[int, ...] = ()
    download_dir: Optional[str] = None  # Whisper: the download root its loader reads ('' = openai-whisper's)


def _entry_model(entry: dict, origin: str) -> Model:
    name = entry.get("upstream", "")
    if name.endswith(LOCAL_SUFFIXES):
        return Model("file", str(entry.get("path_or_url") or ""), origin)
    return Model("s3prl", name, origin)


def _table_models(settings, names: Iterable[str]) -> List[Model]:
    names = list(names)
    table = load_yaml(settings.upstream_conf) if names else {}
    out = []
    for name in names:
        if name not in table:
            raise ValueError(f"{settings.upstream_conf}: no upstream entry {name!r} (has {sorted(table)})")
        out.append(_entry_model(dict(table[name]), f"{settings.upstream_conf} entry {name!r}"))
    return out


def _whisper_asr_model(settings) -> Model:
    conf = load_yaml(settings.whisper_config).get("encoder_conf") or {}
    name = settings.whisper_asr_model or conf.get("whisper_model", "")
    return Model("whisper", str(name), str(settings.whisper_config), download_dir=conf.get("download_dir") or "")


def _training_models(settings) -> List[Model]:
    ref = settings.upstreams[:1]
    out = []
    if settings.finetune_config:
        adult = [n for n in [*ref, *settings.adult_upstreams] if settings.adult_train_set]
        out += _table_models(settings, [*settings.upstreams, *adult])
    if settings.probe_config or settings.sshr_systems:
        out += _table_models(settings, ref)
    if settings.interface_systems:
        for system, conf in (load_yaml(settings.interface_systems) or {}).items():
            conf = conf or {}
            upstream = conf.get("upstream", ref[0] if ref else "")
            if "deltas" in conf:
                out += _table_models(settings, [*ref, *conf["deltas"]])
            elif isinstance(upstream, dict):
                out.append(_entry_model(upstream, f"{settings.interface_systems} system {system!r}"))
            else:
                out += _table_models(settings, [upstream])
    if settings.whisper_config:
        out.append(_whisper_asr_model(settings))
    return out


def _screening_model(settings) -> List[Model]:
    if not settings.screen_model or (settings.screen_hyp and Path(settings.screen_hyp).is_file()):
        return []
    opts = shlex.split(settings.screen_opts or "")
    root = opts[opts.index("--download_root") + 1] if "--download_root" in opts[:-1] else ""
    return [Model("whisper", settings.screen_model, "--whisper_model (screening)", download_dir=root)]


def stage_models(settings, stage: int) -> List[Model]:
    """The models stage ``stage`` loads."""
    if stage == 1:
        return _screening_model(settings)
    if stage in (4, 5):
        return _training_models(settings)
    if stage in (6, 10):
        return _table_models(settings, settings.upstreams)
    if stage == 8 and settings.adult_train_set:
        whisper = [_whisper_asr_model(settings)] if settings.whisper_config else []
        return _table_models(settings, settings.upstreams[:1]) + whisper
    return []


def needed_models(settings, stages: Iterable[int]) -> List[Model]:
    """The models of ``stages``, each once (its stages merged), in first-needed order."""
    seen: Dict[tuple, Model] = {}
    for stage in stages:
        for m in stage_models(settings, stage):
            key = (m.kind, m.name, m.download_dir or "")
            seen.setdefault(key, dataclasses.replace(m, stages=()))
            if stage not in seen[key].stages:
                seen[key].stages += (stage,)
    return [m for m in seen.values() if m.name]


def whisper_url(name: str) -> Optional[str]:
    import whisper

    return whisper._MODELS.get(name)


def locate(model: Model, map_file=None) -> Tuple[Path, Optional[str]]:
    """(the file the loader will read, the URL that fills it; None for a local file)."""
    table = model_map(map_file)
    mapped = table.get(model.name)
    if model.kind == "file" and mapped is None and not Path(model.name).is_file():
        mapped = table.get(Path(model.name).stem)  # a hub-less model by its file stem (ssl.hub.mapped_local_file)
    if mapped is not None:
        return mapped, None
    if model.kind == "s3prl":
        url = s3prl_hub_url(model.name)
        return s3prl_cache_file(url), url
    if model.kind == "whisper" and whisper_url(model.name):
        from espnet_delta.whisper.load import default_download_dir

        url = whisper_url(model.name)
        return Path(model.download_dir or default_download_dir()) / os.path.basename(url), url
    return Path(model.name), None


def missing_line(model: Model, path: Path, url: Optional[str]) -> str:
    what = f"{model.kind} model {model.name!r}" if model.kind != "file" else "local model file"
    stages = ",".join(map(str, model.stages))
    if url is None:
        return f"{what} (from {model.origin}, stage {stages}): {path} not found"
    return f"{what} (from {model.origin}, stage {stages}) is not in {path}: {FETCH_HINT}"


def mirrored(url: str, base_url: Optional[str]) -> str:
    """``url`` with its scheme and host replaced by ``base_url`` (the path kept)."""
    if not base_url:
        return url
    parts = urllib.parse.urlsplit(url)
    return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def expected_sha256(url: str) -> Optional[str]:
    """openai-whisper's URLs carry the file's SHA-256 as the second-last path component."""
    parent = urllib.parse.urlsplit(url).path.split("/")[-2:-1]
    return parent[0] if parent and len(parent[0]) == 64 else None


def download(url: str, dest: Path, base_url: Optional[str] = None) -> int:
    """Download ``url`` (through ``base_url``) into ``dest`` atomically, with a progress bar; returns bytes.

    Every failure is one :class:`HubModelError` line naming the URL.
    """
    from tqdm import tqdm

    source = mirrored(url, base_url if base_url is not None else os.environ.get(BASE_URL_ENV))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    sha.update(chunk)
                    bar.update(len(chunk))
        expected = expected_sha256(url)
        if expected and sha.hexdigest() != expected:
            raise HubModelError(f"{source}: SHA-256 {sha.hexdigest()} differs from the expected {expected}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = " ".join(str(getattr(e, "reason", e)).split())[:200] or type(e).__name__
        raise HubModelError(f"could not download {source} ({reason})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest.stat().st_size
