"""Write randomly initialised checkpoints of every model the paper configs name, and a model map.

    python -m espnet_delta.bin.make_paper_checkpoints --out_dir exp/paper_models --width narrow
    ./run.sh --model_map exp/paper_models/model_map.yaml ...      # every loader then reads them

writes ``<out_dir>/<hub name>.pt`` (the S3PRL models of espnet_delta.ssl.paper_topology in their
``<arch>_local`` formats, the Whisper models of espnet_delta.whisper.paper_topology as ``small.pt``
and ``large-v2.pt``) and ``<out_dir>/model_map.yaml`` (hub name -> file, relative to the map;
entries of an earlier run whose files are still there are kept). ``--width full``: the real
sizes (about 1.3 GB per Large SSL model, 6.2 GB for large-v2); ``narrow``: the same depth, layer
indices and frame counts, a few MB each, for tests and dry runs. A file that exists and loads
with the requested topology is kept (reruns write nothing); writes are atomic.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from espnet_delta.cli import add_log_level_argument, new_parser, setup_logging
from espnet_delta.fileio import atomic_path, write_text_atomic
from espnet_delta.ssl import paper_topology as ssl_topology
from espnet_delta.whisper import paper_topology as whisper_topology

MAP_FILE = "model_map.yaml"


def all_names() -> List[str]:
    return [*ssl_topology.TOPOLOGIES, *whisper_topology.TOPOLOGIES]


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("--out_dir", type=Path, required=True, help="directory for <name>.pt and model_map.yaml")
    p.add_argument("--width", choices=["full", "narrow"], default="narrow", help="real sizes, or narrow for tests")
    p.add_argument("--models", nargs="+", default=None, choices=all_names(), metavar="NAME",
                   help=f"models to write (default: all: {' '.join(all_names())})")
    p.add_argument("--seed", type=int, default=0, help="base seed; the k-th model of the tables uses seed + k")
    add_log_level_argument(p)
    return p


def expected(name: str, width: str) -> Dict:
    """What a kept file must hold: its config (S3PRL) or dims (Whisper)."""
    if name in whisper_topology.TOPOLOGIES:
        return {"dims": dataclasses.asdict(whisper_topology.topology(name, width))}
    top = ssl_topology.topology(name, width)
    return {"cfg" if top.arch == "wavlm" else "model_cfg": top.model_cfg()}


def loads_as(path: Path, want: Dict) -> Optional[int]:
    """The parameter count of ``path`` when it loads (memory-mapped) with the entries ``want``, else None."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a truncated or foreign file: rewritten
        logging.warning("%s does not load (%s): rewriting it", path, " ".join(str(e).split())[:200])
        return None
    if not isinstance(checkpoint, dict) or any(checkpoint.get(k) != v for k, v in want.items()):
        logging.warning("%s holds another topology or format: rewriting it", path)
        return None
    state = checkpoint.get("model_state_dict") or checkpoint.get("model") or checkpoint.get("model_weight") or {}
    return sum(v.numel() for v in state.values())


def build(name: str, width: str, seed: int) -> Dict:
    if name in whisper_topology.TOPOLOGIES:
        return whisper_topology.build(whisper_topology.topology(name, width), seed=seed)
    return ssl_topology.topology(name, width).build(seed=seed)


def save(checkpoint: Dict, path: Path) -> None:
    """``torch.save`` straight into the atomic temporary file: no in-memory copy of a multi-GB archive
    (fileio.torch_save_atomic buffers it); a file object gives the archive the same record name."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)


def write_map(out_dir: Path, names: Sequence[str]) -> Path:
    """model_map.yaml: this run's models plus earlier entries whose files still exist."""
    from espnet_delta.fileio import load_yaml

    path = out_dir / MAP_FILE
    entries = {}
    if path.is_file():
        entries = {k: v for k, v in (load_yaml(path) or {}).items() if (out_dir / str(v)).is_file()}
    entries.update({name: f"{name}.pt" for name in names})
    text = "".join(f"{name}: {file}\n" for name, file in sorted(entries.items()))
    if not path.is_file() or path.read_text() != text:
        write_text_atomic(path, text)
    return path


def run(args) -> List[Dict]:
    names = args.models or all_names()
    order = all_names()
    rows = []
    for name in names:
        path = args.out_dir / f"{name}.pt"
        start = time.time()
        count = loads_as(path, expected(name, args.width))
        status = "kept"
        if count is None:
            checkpoint = build(name, args.width, args.seed + order.index(name))
            state = checkpoint.get("model_state_dict") or checkpoint.get("model") or checkpoint.get("model_weight")
            count = sum(v.numel() for v in state.values())
            save(checkpoint, path)
            del checkpoint, state
            gc.collect()
            status = "written"
        row = {"name": name, "file": str(path), "status": status, "parameters": count,
               "bytes": path.stat().st_size, "seconds": round(time.time() - start, 1)}
        logging.info("%s %s: %s, %.2f M values (parameters and buffers), %.1f MiB, %.1f s", status, name, path,
                     count / 1e6, row["bytes"] / 2**20, row["seconds"])
        rows.append(row)
    map_path = write_map(args.out_dir, names)
    logging.info("model map: %s (use --model_map %s)", map_path, map_path)
    return rows


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    try:
        rows = run(args)
    except OSError as e:  # a full disk, a read-only folder: one line, no partial file (atomic writes)
        logging.error("%s: %s", args.out_dir, " ".join(str(e).split()))
        sys.exit(1)
    for row in rows:
        print(f"{row['name']}\t{row['status']}\t{row['parameters']}\t{row['bytes']}\t{row['seconds']}\t{row['file']}")


if __name__ == "__main__":
    main()
