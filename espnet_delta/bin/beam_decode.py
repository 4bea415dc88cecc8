"""Beam-search decoding (and scoring) of ESPnet attention-decoder models, e.g. fine-tuned Whisper.

    python -m espnet_delta.bin.beam_decode exp/whisper_child exp/whisper_adult --model_name valid.acc.best.pth \\
        --decode_config conf/whisper/decode.yaml --test dev=data/dev/wav.scp --test test=data/test/wav.scp --ref_dir data

The counterpart of :mod:`espnet_delta.bin.decode` (greedy CTC) for models with a decoder:
ESPnet's own ``Speech2Text`` (``espnet2.bin.asr_inference``: BatchBeamSearch over the decoder,
plus CTC prefix scores when ``ctc_weight`` > 0) with the options of ``--decode_config``, run in
one process for every job and test set. For each job directory (ESPnet's ``config.yaml`` and
the model file) it writes ``<job>/decode/<set>/text`` and, with ``--ref_dir``, the scoring
report ``<job>/decode/<set>/score_wer/``, the same files as the greedy decoder, so the rows
join RESULTS.md beside the CTC systems. The weights are read with ``torch.load(weights_only=True)``
and must match the config exactly. A set whose ``text`` exists is not decoded again.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from espnet2.utils.config_argparse import ArgumentParser

from espnet_delta.bin import add_bool_argument, add_log_level_argument, setup_logging, parse_test_sets

#: Speech2Text options a decode config may not set: the model and device come from the command line
RESERVED = {"asr_train_config", "asr_model_file", "device"}


def read_decode_config(path: Optional[Path]) -> Dict[str, Any]:
    """Speech2Text options from a YAML file; unknown keys are refused, naming the file."""
    from espnet_delta.asr.inference import Speech2Text
    from espnet_delta.fileio import load_yaml

    conf = dict(load_yaml(path) or {}) if path is not None else {}
    allowed = set(inspect.signature(Speech2Text.__init__).parameters) - {"self"} - RESERVED
    unknown = sorted(set(conf) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown beam-search options {unknown} (Speech2Text takes {sorted(allowed)})")
    if int(conf.get("batch_size", 1)) != 1:
        raise ValueError(f"{path}: batch_size must be 1 (BatchBeamSearch batches the hypotheses of one utterance)")
    return conf


def load_speech2text(asr_config: Path, model_file: Path, decode_conf: Dict[str, Any], device: str = "cpu"):
    """ESPnet's Speech2Text for a trained model (plugin registered), weights loaded strictly, weights_only."""
    from espnet_delta.asr.inference import Speech2Text

    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file} not found")
    s2t = Speech2Text(asr_train_config=str(asr_config), asr_model_file=None, device=device, **decode_conf)
    state = torch.load(model_file, map_location=device, weights_only=True)
    missing, unexpected = s2t.asr_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{model_file} does not match {asr_config}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    s2t.asr_model.eval()
    return s2t


@torch.no_grad()
def decode_entries(s2t, entries: List[Tuple[str, str]]) -> Dict[str, str]:
    """utt id -> best hypothesis text for every ``(utt, wav path)``."""
    from espnet_delta.asr.greedy_ctc import load_input

    hyps: Dict[str, str] = {}
    start = time.time()
    for n, (key, value) in enumerate(entries, 1):
        speech = torch.from_numpy(load_input(value, "sound"))
        results = s2t(speech)
        text = results[0][0] if results else ""
        hyps[key] = " ".join((text or "").split())
        if n % 50 == 0:
            logging.info("beam search: %d/%d utterances (%.1f s)", n, len(entries), time.time() - start)
    logging.info("beam search: decoded %d utterances in %.1f s", len(hyps), time.time() - start)
    return hyps


def score_set(job: Path, name: str, hyp_file: Path, ref_dir: Path, no_sctk: bool = False):
    """``<job>/decode/<name>/score_wer/`` against ``<ref_dir>/<name>/text``, the SSL rows' normaliser."""
    from espnet_delta.data.text_norm import normalize_transcript
    from espnet_delta.scoring import score

    ref = ref_dir / name
    summary = score(
        ref / "text", hyp_file, job / "decode" / name / "score_wer",
        utt2spk=ref / "utt2spk" if (ref / "utt2spk").is_file() else None,
        use_sctk=False if no_sctk else None, system=job.name, test_set=name, normalizer=normalize_transcript,
    )
    logging.info("%s %s: WER %.2f %% (%d words)", job, name, summary.wer, summary.counts.words)
    return summary


def decode_job(job: Path, model_name: str, tests: Sequence[Tuple[str, Path]], args) -> None:
    """Decode (and score) one job on every test set; ``args``: decode_config, device, ref_dir, no_sctk."""
    from espnet_delta.asr.greedy_ctc import read_scp
    from espnet_delta.bin.decode import write_text

    s2t = None
    for name, scp in tests:
        hyp_file = job / "decode" / name / "text"
        if hyp_file.is_file():
            logging.info("%s %s: %s exists, not decoding again", job, name, hyp_file)
        else:
            if s2t is None:
                s2t = load_speech2text(job / "config.yaml", job / model_name, read_decode_config(args.decode_config), args.device)
            write_text(decode_entries(s2t, read_scp(scp)), hyp_file)
            logging.info("%s %s: wrote %s", job, name, hyp_file)
        if args.ref_dir is not None:
            score_set(job, name, hyp_file, args.ref_dir, no_sctk=args.no_sctk)


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", nargs="+", type=Path, help="job directories with config.yaml and the model file")
    parser.add_argument("--model_name", default="valid.acc.best.pth", help="model file inside each job directory")
    parser.add_argument("--decode_config", type=Path, default=None,
                        help="YAML of Speech2Text options (beam_size, ctc_weight, penalty, maxlenratio, ...)")
    parser.add_argument("--test", action="append", default=None, metavar="NAME=SCP",
                        help="test set name and its wav.scp (repeatable; required)")
    parser.add_argument("--ref_dir", type=Path, default=None, help="score against <ref_dir>/<set>/text (and utt2spk)")
    parser.add_argument("--device", default="cpu")
    add_bool_argument(parser, "--no_sctk", help="do not cross-check with SCTK's sclite")
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    tests = parse_test_sets(parser, args.test)
    if args.decode_config is not None and not args.decode_config.is_file():
        parser.error(f"--decode_config {args.decode_config}: no such file")
    setup_logging(args.log_level)
    try:
        read_decode_config(args.decode_config)  # refuse a bad config before any model is built
    except ValueError as e:
        parser.error(str(e))
    for job in args.jobs:
        decode_job(job, args.model_name, tests, args)


if __name__ == "__main__":
    main()
