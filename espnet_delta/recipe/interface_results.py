"""The layer-interface section of RESULTS.md: error rates and trainable parameters per system.

    python -m espnet_delta.recipe.interface_results --jobs exp/if_* --test_sets dev test \\
        --out exp/interface_results.md

One row per system of ``--interface_systems`` (``exp/if_<system>_<unit>`` job dirs of
``espnet_delta.recipe.families.interface``): its frontend and interface, the trainable
parameters of the interface part (frontend) and of the whole model per unit, WER and
CER of the character model and PER of the phone model on every test set. Trainable
parameters are counted on the decoded checkpoint as the sum of its tensors' sizes:
the frozen upstreams are kept out of the state dict, so what is saved is what was
trained, except fixed buffers named ``fixed_*`` (pca's fitted projection), which are not
counted (``tests/integration/test_interface_recipe.py`` checks this against ``requires_grad``).
Stage 5 writes the file; RESULTS.md (stages 9, 10) appends it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from espnet_delta.cli import add_log_level_argument, reports_bad_input, setup_logging
from espnet_delta.fileio import load_yaml, write_text_atomic
from espnet_delta.recipe.names import INTERFACE_PREFIX as JOB_PREFIX
from espnet_delta.recipe.names import UNIT_CHECKPOINTS as MODEL_NAMES
from espnet_delta.recipe.names import UNITS, parse_unit_job
from espnet_delta.scoring import SCORE_JSON, load_score, wer_numbers

FRONTEND_PREFIX = "frontend."
FIXED_PREFIX = "fixed_"  # espnet_delta.ssl.interfaces.FIXED_PREFIX, without importing the interfaces


def parse_job(job: Path) -> Tuple[str, str]:
    """``if_<system>_<unit>`` -> (system, unit)."""
    return parse_unit_job(job, JOB_PREFIX)


def checkpoint_params(model_file: Path) -> Tuple[int, int]:
    """(frontend, total) element counts of the tensors of an ESPnet model checkpoint."""
    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file} not found (stage 4 trains it)")
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{model_file}: not a state dict (a {type(state).__name__})")
    # fitted-then-fixed buffers (the pca interface's projection) are saved but not trained
    state = {k: v for k, v in state.items() if not k.rsplit(".", 1)[-1].startswith(FIXED_PREFIX)}
    total = sum(v.numel() for v in state.values())
    frontend = sum(v.numel() for k, v in state.items() if k.startswith(FRONTEND_PREFIX))
    return frontend, total


def error_rate(score_dir: Path, level: str) -> Optional[float]:
    """WER (``word``) or CER (``char``) of a scored dir in percent, as RESULTS.md rounds it."""
    if not (score_dir / SCORE_JSON).is_file():
        return None
    summary = load_score(score_dir)
    return wer_numbers(summary.counts if level == "word" else summary.char_counts)["Err"]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def format_interface_md(jobs: Sequence[Path], test_sets: Sequence[str]) -> str:
    rows: Dict[str, Dict[str, object]] = {}
    for job in jobs:
        system, unit = parse_job(job)
        config = load_yaml(job / "config.yaml")
        frontend_conf = config.get("frontend_conf") or {}
        frontend, total = checkpoint_params(job / MODEL_NAMES[unit])
        encoder_conf = config.get("encoder_conf") or {}
        downstream = config.get("encoder")
        if "hidden_size" in encoder_conf:
            downstream = f"{downstream} {encoder_conf.get('num_layers', '')}x{encoder_conf['hidden_size']}"
        row = rows.setdefault(system, {"frontend": config.get("frontend"), "interface": frontend_conf.get("interface"),
                                       "downstream": downstream})
        if row.setdefault("frontend params", frontend) != frontend:
            logging.warning("%s: frontend parameters differ between units (%d vs %d)", system, row["frontend params"], frontend)
        row[f"params ({unit})"] = total
        for t in test_sets:
            if unit == "char":
                row[f"{t} WER"] = error_rate(job / "decode" / t / "score_wer", "word")
                row[f"{t} CER"] = error_rate(job / "decode" / t / "score_wer", "char")
            else:
                row[f"{t} PER"] = error_rate(job / "decode" / t / "score_per", "word")
    columns: List[str] = ["frontend", "interface", "downstream", "frontend params", *(f"params ({u})" for u in UNITS)]
    columns += [f"{t} {m}" for t in test_sets for m in ("WER", "CER", "PER")]
    out = [
        "## Layer interfaces",
        "",
        "Frozen upstream -> layer interface -> downstream -> CTC (arXiv 2406.12209; `--interface_systems`). "
        "params: trainable parameters, counted on the decoded checkpoint (the frozen upstreams are not saved); "
        "frontend params: the interface(s) (and a fusion head); params (char/phn): the whole model, whose CTC head "
        f"depends on the token list. WER/CER of the character model ({MODEL_NAMES['char']}), PER of the phone "
        f"model ({MODEL_NAMES['phn']}), in percent; phones scored as written (`espnet_delta/scoring/phones.py`).",
        "",
        "|system|" + "|".join(columns) + "|",
        "|---" * (len(columns) + 1) + "|",
    ]
    for system, row in rows.items():
        out.append(f"|{system}|" + "|".join(_cell(row.get(c)) for c in columns) + "|")
    return "\n".join(out) + "\n"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", nargs="+", type=Path, required=True, help="exp/if_<system>_<unit> job dirs")
    p.add_argument("--test_sets", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    write_text_atomic(args.out, format_interface_md(args.jobs, args.test_sets))
    logging.info("wrote %s (%d job dirs)", args.out, len(args.jobs))


if __name__ == "__main__":
    main()
