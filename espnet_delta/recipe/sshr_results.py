"""The SSHR section of RESULTS.md: CER (graphemes) and PER (phonemes) per language and their average.

    python -m espnet_delta.recipe.sshr_results --jobs exp/sshr_* --data_dir data --test_sets test \\
        --out exp/sshr_results.md

Reads each job's scored decodings (``decode/<set>/score_wer/score.json`` of character
models: the character-level alignment, ESPnet's CER with ``<space>`` tokens;
``score_per/score.json`` of phone models: the phone alignment) and the languages in
``<data_dir>/<set>/utt2lang``; sums the error counts per language. "avg" is the mean
of the per-language rates (each language weighs the same, as the paper averages
languages), "all" the rate over every utterance pooled.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_delta.cli import add_log_level_argument, reports_bad_input, setup_logging
from espnet_delta.fileio import load_yaml, read_table, write_text_atomic
from espnet_delta.recipe.names import SCORE_DIRS, score_dir
from espnet_delta.recipe.names import SSHR_PREFIX as JOB_PREFIX
from espnet_delta.scoring import Counts, load_score

TITLES = {"char": "CER (%), graphemes", "phn": "PER (%), phonemes"}


def language_counts(job: Path, unit: str, test_set: str, utt2lang: Dict[str, str]) -> Dict[str, Counts]:
    """Error counts per language of one scored decoding."""
    summary = load_score(score_dir(job, test_set, unit))
    utterances = summary.char_level() if unit == "char" else summary.utterances
    counts: Dict[str, Counts] = {}
    for u in utterances:
        if u.utt_id not in utt2lang:
            raise KeyError(f"{job}: utterance {u.utt_id!r} of {test_set} has no language in utt2lang")
        lang = utt2lang[u.utt_id]
        counts[lang] = counts.get(lang, Counts()) + u.counts
    return counts


def describe(job: Path) -> str:
    """The SSHR options of a job, from its config.yaml (what the row's system is)."""
    conf = load_yaml(job / "config.yaml")
    enc, model = conf.get("encoder_conf") or {}, conf.get("model_conf") or {}
    parts = [f"k={enc.get('language_frame_layer')}"]
    parts.append("LF" if enc.get("language_frame", True) else "no LF")
    if enc.get("drop_layers"):
        parts.append(f"drop {enc['drop_layers']}")
    if enc.get("replace_layers"):
        parts.append(f"replace {enc['replace_layers']}")
    if enc.get("cross_ctc_layers"):
        parts.append(f"Cross-CTC {enc['cross_ctc_layers']} (w={model.get('interctc_weight', 0.0)})")
    return ", ".join(parts)


def format_tables(jobs: Sequence[Path], data_dir: Path, test_sets: Sequence[str]) -> str:
    lines: List[str] = ["## SSHR: error rates per language", ""]
    for unit in SCORE_DIRS:
        unit_jobs = [j for j in jobs if j.name.endswith(f"_{unit}") and (j / "config.yaml").is_file()]
        for test_set in test_sets:
            utt2lang = {r.key: r.value for r in read_table(data_dir / test_set / "utt2lang", what="utt2lang")}
            langs = sorted(set(utt2lang.values()))
            rows = []
            for job in sorted(unit_jobs):
                if not (score_dir(job, test_set, unit) / "score.json").is_file():
                    continue
                counts = language_counts(job, unit, test_set, utt2lang)
                rates = [counts[lang].wer if lang in counts else float("nan") for lang in langs]
                pooled = sum(counts.values(), Counts()).wer
                system = job.name[len(JOB_PREFIX):].rsplit("_", 1)[0]
                rows.append(f"|{system}|{describe(job)}|" + "|".join(f"{r:.1f}" for r in rates)
                            + f"|**{sum(rates) / len(rates):.1f}**|{pooled:.1f}|")
            if rows:
                lines += [f"### {TITLES[unit]}, {test_set}", "",
                          "|system|options|" + "|".join(langs) + "|avg|all|",
                          "|---|---|" + "---|" * len(langs) + "---|---|", *rows, ""]
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=Path, nargs="+", required=True, help=f"{JOB_PREFIX}<system>_<unit> job dirs")
    p.add_argument("--data_dir", type=Path, required=True, help="<data_dir>/<set>/utt2lang")
    p.add_argument("--test_sets", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="markdown section to write")
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    write_text_atomic(args.out, format_tables(args.jobs, args.data_dir, args.test_sets))
    logging.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
