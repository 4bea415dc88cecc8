"""Greedy CTC decoding (and scoring) of ESPnet ASR models on several test sets, in one process.

    python -m espnet_delta.bin.decode exp/ft_wavlm exp/ft_hubert --model_name valid.wer_ctc.best.pth \\
        --test dev=data/dev/wav.scp --test test=data/test/wav.scp --input_type sound --ref_dir data

For each job directory (holding ESPnet's ``config.yaml`` and the model file) writes
``<job>/decode/<set>/text`` and, with ``--ref_dir``, a scoring report in
``<job>/decode/<set>/score_wer/`` against ``<ref_dir>/<set>/text``. One process
serves every system and test set (ESPnet's import costs ~16 s per process). A set
whose ``text`` exists is not decoded again (delete it to redo).

``--unit phn`` is for phone CTC models (``token_type: word`` over a phone token list,
``espnet_delta.recipe.interface_jobs``): hypotheses are the phones separated by spaces,
the reference is ``<ref_dir>/<set>/text.phn`` and the phone error rate (PER) is scored
into ``score_per/`` with phones compared as they are (no upper-casing or word
normalisation: :func:`espnet_delta.scoring.phones.normalize_phones`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
from espnet2.utils.config_argparse import ArgumentParser

from espnet_delta.bin import add_bool_argument, add_log_level_argument, setup_logging, parse_test_sets


def load_model(asr_config: Path, model_file: Path, device: str):
    """Build an ESPnet ASR model (plugin registered) and load its weights strictly, weights_only."""
    import yaml

    from espnet_delta.asr.register import register
    from espnet_delta.ssl.upstream import use_exact_frame_mask

    register()
    from espnet2.tasks.asr import ASRTask

    with open(asr_config, encoding="utf-8") as f:
        args = argparse.Namespace(**yaml.safe_load(f))
    model = ASRTask.build_model(args)
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{model_file} does not match {asr_config}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    if type(getattr(model, "frontend", None)) is S3prlFrontend:
        # models trained with ESPnet's own `s3prl` frontend: at least the exact padding mask
        # (`s3prl_exact` also trims S3PRL's extra frame; the plugin's other frontends are exact)
        use_exact_frame_mask(model.frontend.upstream)
    return model.to(device).eval()


def write_text(hyps, out: Path) -> None:
    from espnet_delta.fileio import write_text_atomic

    write_text_atomic(out, "".join(f"{key} {hyps[key]}".rstrip() + "\n" for key in sorted(hyps)))


#: unit -> (reference file in <ref_dir>/<set>/, score dir name)
UNITS = {"char": ("text", "score_wer"), "phn": ("text.phn", "score_per")}


@torch.no_grad()
def decode_phones(model, entries, input_type: str, batch_size: int, device: str):
    """utt id -> greedy-CTC phones separated by spaces (every token is one phone)."""
    from espnet_delta.asr.greedy_ctc import BLANK, batches

    hyps = {}
    for keys, speech, lengths in batches(entries, input_type, batch_size):
        enc, enc_lens = model.encode(speech.to(device), lengths.to(device))
        if isinstance(enc, tuple):  # intermediate CTC (e.g. encoder: sshr): (out, [(layer, out_l), ...])
            enc = enc[0]
        ids = model.ctc.argmax(enc).cpu()
        for b, key in enumerate(keys):
            path = torch.unique_consecutive(ids[b, : int(enc_lens[b])]).tolist()
            hyps[key] = " ".join(model.token_list[i] for i in path if i != BLANK)
    logging.info("decoded %d utterances into phones", len(hyps))
    return hyps


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", nargs="+", type=Path, help="job directories with config.yaml and the model file")
    parser.add_argument("--model_name", default="valid.wer_ctc.best.pth", help="model file inside each job directory")
    parser.add_argument("--test", action="append", default=None, metavar="NAME=SCP",
                        help="test set name and its wav.scp or feats.scp (repeatable; required)")
    parser.add_argument("--input_type", default="sound", choices=["sound", "kaldi_ark"])
    parser.add_argument("--ref_dir", type=Path, default=None, help="score against <ref_dir>/<set>/text (and utt2spk)")
    parser.add_argument("--unit", default="char", choices=sorted(UNITS),
                        help="char: words (WER/CER, score_wer); phn: phones (PER against text.phn, score_per)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    add_bool_argument(parser, "--no_sctk", help="do not cross-check with SCTK's sclite")
    add_log_level_argument(parser)
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    tests = parse_test_sets(parser, args.test)
    setup_logging(args.log_level)
    for job in args.jobs:
        decode_job(job, args.model_name, tests, args)


def decode_job(job: Path, model_name: str, tests, args) -> None:
    from espnet_delta.asr.greedy_ctc import decode_batches, read_scp

    model = None
    for name, scp in tests:
        hyp_file = job / "decode" / name / "text"
        if hyp_file.is_file():
            logging.info("%s %s: %s exists, not decoding again", job, name, hyp_file)
        else:
            if model is None:
                model = load_model(job / "config.yaml", job / model_name, args.device)
            decode = decode_phones if args.unit == "phn" else decode_batches
            hyps = decode(model, read_scp(scp), args.input_type, args.batch_size, args.device)
            write_text(hyps, hyp_file)
            logging.info("%s %s: wrote %s", job, name, hyp_file)
        if args.ref_dir is not None:
            from espnet_delta.data.text_norm import normalize_transcript
            from espnet_delta.scoring import score
            from espnet_delta.scoring.phones import normalize_phones

            ref = args.ref_dir / name
            ref_name, score_dir = UNITS[args.unit]
            summary = score(
                ref / ref_name, hyp_file, job / "decode" / name / score_dir,
                utt2spk=ref / "utt2spk" if (ref / "utt2spk").is_file() else None,
                use_sctk=False if args.no_sctk else None,
                system=job.name,
                test_set=name,
                normalizer=normalize_phones if args.unit == "phn" else normalize_transcript,
            )
            logging.info("%s %s: %s %.2f %% (%d %s)", job, name, "PER" if args.unit == "phn" else "WER",
                         summary.wer, summary.counts.words, "phones" if args.unit == "phn" else "words")


if __name__ == "__main__":
    main()
