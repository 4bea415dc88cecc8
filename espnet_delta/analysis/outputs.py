"""Resumable outputs of the analysis stage: input fingerprints and write-if-changed.

Every expensive result (one model's layer-wise similarities, one MoE system's gate
statistics) is cached as JSON next to the figures together with a fingerprint of
its inputs (file paths and content digests, so that a stage which rewrites a file
with the same content does not invalidate the cache; the options that change the
numbers). A rerun whose fingerprint matches reads the cache instead of running any
model; tables and figures are rewritten only when their contents changed, so a
rerun with nothing new leaves every output file untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from espnet_delta.fileio import atomic_path, write_text_atomic

#: Bumped when the numbers an analysis writes change meaning; invalidates old caches.
ANALYSIS_VERSION = 1


def file_fingerprint(path) -> Optional[Dict[str, Any]]:
    """Absolute path, size and SHA-256 of a file; None for a name that is not a file (hub name).

    Content, not mtime: data preparation rewrites wav.scp with identical lines on a
    rerun, which must not redo the analysis (hashing a large checkpoint takes seconds).
    """
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": os.path.abspath(p), "size": p.stat().st_size, "sha256": digest.hexdigest()}


def load_cache(path: Path, inputs: Dict[str, Any]) -> Optional[Any]:
    """The cached ``result`` of ``path`` when it was computed from exactly ``inputs``."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        logging.warning("%s: unreadable cache (%s); recomputing", path, e)
        return None
    if data.get("version") != ANALYSIS_VERSION or data.get("inputs") != _normalise(inputs):
        logging.info("%s: inputs changed; recomputing", path)
        return None
    return data.get("result")


def save_cache(path: Path, inputs: Dict[str, Any], result: Any) -> None:
    text = json.dumps({"version": ANALYSIS_VERSION, "inputs": inputs, "result": result}, indent=1, allow_nan=True)
    write_text_atomic(path, text + "\n")


def _normalise(inputs: Dict[str, Any]) -> Any:
    """``inputs`` as they read back from JSON (tuples become lists)."""
    return json.loads(json.dumps(inputs, allow_nan=True))


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless ``path`` already holds it; True when written."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text_atomic(path, text)
    return True


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib Figure as PNG atomically (a reader never sees half an image)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def refresh_figures(table: Path, text: str, figures: Dict[Path, Callable[[], Any]]) -> bool:
    """Rewrite ``table`` and redraw each figure (``path -> draw()`` returning a Figure)
    when the table's contents changed or the figure is missing. True when anything was written."""
    changed = write_text_if_changed(table, text)
    wrote = changed
    for path, draw in figures.items():
        if changed or not path.is_file():
            save_figure(draw(), path)
            logging.info("wrote %s", path)
            wrote = True
        else:
            logging.info("%s is up to date", path)
    return wrote
