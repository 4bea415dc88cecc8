"""Decoding of trained ESPnet ASR models: model loading, greedy CTC, phone and beam decoding, one loop.

A *job* is an ESPnet output directory holding ``config.yaml`` and the model file; it is
decoded on each test set ``(name, wav.scp or feats.scp)`` into ``<job>/decode/<set>/text``
(one ``utt hypothesis`` line per utterance, sorted by id) and, with a reference data dir,
scored into ``<job>/decode/<set>/score_wer/`` (words and characters) or, for phone CTC
models, ``score_per/`` against ``text.phn`` (phones compared as they are:
:func:`espnet_delta.scoring.phones.normalize_phones`). A set whose ``text`` exists is not
decoded again (delete it to redo); it is scored again, which is cheap.

Three decoders share :func:`decode_job`:

* greedy CTC (the default): batched, length-sorted, for waveforms and cached features;
* phones (``unit="phn"``): greedy CTC whose tokens are phones, joined by spaces;
* beam search (``beam``): ESPnet's own ``Speech2Text`` (BatchBeamSearch over
  an attention decoder, plus CTC prefix scores when ``ctc_weight`` > 0), one utterance at a time.

Weights are read with ``torch.load(weights_only=True)`` and must match the config exactly.
One process serves every job and set: ESPnet's import costs ~16 s per process.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_delta.asr.greedy_ctc import best_paths, ids_to_phones, ids_to_text
from espnet_delta.data.audio import TARGET_RATE, AudioError, read_audio
from espnet_delta.fileio import DiskFullError, is_disk_full, load_yaml, read_scp, write_text_atomic

#: unit -> (reference file in <ref_dir>/<set>/, score dir name)
UNITS = {"char": ("text", "score_wer"), "phn": ("text.phn", "score_per")}
INPUT_TYPES = ("sound", "kaldi_ark")
#: Speech2Text options a decode config may not set: the model and device come from the job
RESERVED = {"asr_train_config", "asr_model_file", "device"}

Entries = List[Tuple[str, str]]  # (utt, wav path or ark:offset)


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How to decode and score. ``beam``: ESPnet's beam search with the Speech2Text options of
    ``decode_config`` (``None``: Speech2Text's defaults) instead of greedy CTC; ``ref_dir``:
    score against ``<ref_dir>/<set>/text`` (or ``text.phn``); ``use_sctk``: ``None``
    cross-checks with SCTK's sclite when installed, ``False`` never."""

    beam: bool = False
    unit: str = "char"
    input_type: str = "sound"
    batch_size: int = 8
    device: str = "cpu"
    decode_config: Optional[Path] = None
    ref_dir: Optional[Path] = None
    use_sctk: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit={self.unit!r}; expected one of {sorted(UNITS)}")
        if self.input_type not in INPUT_TYPES:
            raise ValueError(f"input_type={self.input_type!r}; expected one of {INPUT_TYPES}")
        if self.decode_config is not None and not self.beam:
            raise ValueError("decode_config holds beam-search options; set beam=True to use them")
        if self.beam and (self.unit != "char" or self.input_type != "sound"):
            raise ValueError("beam search decodes waveforms into words: unit char, input_type sound")


# ------------------------------------------------------------------ models
def load_model(asr_config: Path, model_file: Path, device: str):
    """Build an ESPnet ASR model (plugin registered) and load its weights strictly, weights_only."""
    from espnet_delta.asr.register import register
    from espnet_delta.ssl.upstream import use_exact_frame_mask

    register()
    from espnet2.tasks.asr import ASRTask

    model = ASRTask.build_model(argparse.Namespace(**load_yaml(asr_config)))
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{model_file} does not match {asr_config}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    if type(getattr(model, "frontend", None)) is S3prlFrontend:
        # models trained with ESPnet's own `s3prl` frontend: at least the exact padding mask
        # (`s3prl_exact` also trims S3PRL's extra frame; the plugin's other frontends are exact)
        use_exact_frame_mask(model.frontend.upstream)
    return model.to(device).eval()


def read_decode_config(path: Optional[Path]) -> Dict[str, Any]:
    """Speech2Text options from a YAML file; unknown keys are refused, naming the file."""
    from espnet_delta.asr.inference import Speech2Text

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
        raise ValueError(f"{model_file} does not match {asr_config}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    s2t.asr_model.eval()
    return s2t


# ------------------------------------------------------------------ inputs
def read_entries(scp: Path) -> Entries:
    """``(utt, value)`` of a wav.scp or feats.scp, in file order."""
    return [(row.key, row.value) for row in read_scp(scp)]


def load_input(value: str, input_type: str, utt: str = "") -> np.ndarray:
    """A 16 kHz mono waveform (``sound``) or a cached feature matrix (``kaldi_ark``); an error
    names the utterance (its scp line) and the file, on one line."""
    where = f"utterance {utt}: {value}" if utt else value
    if input_type == "sound":
        try:
            wav, rate = read_audio(value)
        except AudioError as e:
            raise ValueError(f"{where}: {e}") from e
        if rate != TARGET_RATE or wav.shape[1] != 1:
            raise ValueError(f"{where}: {rate} Hz with {wav.shape[1]} channel(s), expected {TARGET_RATE} Hz mono")
        return wav[:, 0]
    if input_type == "kaldi_ark":
        import kaldiio

        try:
            return np.asarray(kaldiio.load_mat(value), dtype=np.float32)
        except Exception as e:  # kaldiio's own (a missing ark, an offset past its end): never the file name
            raise ValueError(f"{where}: unreadable feature matrix ({type(e).__name__}: {e})") from e
    raise ValueError(f"input_type={input_type!r}; expected sound or kaldi_ark")


def batches(entries: Entries, input_type: str, batch_size: int) -> Iterator[Tuple[List[str], torch.Tensor, torch.Tensor]]:
    """Length-sorted batches (less padding), padded with zeros."""
    loaded = [(key, load_input(value, input_type, key)) for key, value in entries]
    loaded.sort(key=lambda kv: -len(kv[1]))
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        tensors = [torch.from_numpy(np.ascontiguousarray(x)) for _, x in chunk]
        lengths = torch.tensor([len(t) for t in tensors])
        yield [k for k, _ in chunk], torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True), lengths


# ------------------------------------------------------------------ decoders: entries -> {utt: hypothesis}
@torch.no_grad()
def decode_greedy(model, entries: Entries, input_type: str, batch_size: int = 8, device: str = "cpu",
                  unit: str = "char") -> Dict[str, str]:
    """utt id -> greedy-CTC hypothesis: words (``char``) or phones separated by spaces (``phn``)."""
    from tqdm import tqdm

    model.eval()
    hyps: Dict[str, str] = {}
    with tqdm(total=len(entries), unit="utt", desc="decode", leave=False) as bar:
        for keys, speech, lengths in batches(entries, input_type, batch_size):
            ids, enc_lens = best_paths(model, speech, lengths, device)
            for b, key in enumerate(keys):
                path = ids[b, : int(enc_lens[b])]
                hyps[key] = ids_to_phones(path, model.token_list) if unit == "phn" else \
                    ids_to_text(path.tolist(), model.token_list)
            bar.update(len(keys))
    logging.info("decoded %d utterances%s", len(hyps), " into phones" if unit == "phn" else "")
    return hyps


@torch.no_grad()
def decode_beam(s2t, entries: Entries) -> Dict[str, str]:
    """utt id -> best beam-search hypothesis of ESPnet's Speech2Text, one waveform at a time."""
    hyps: Dict[str, str] = {}
    start = time.time()
    for n, (key, value) in enumerate(entries, 1):
        results = s2t(torch.from_numpy(load_input(value, "sound", key)))
        text = results[0][0] if results else ""
        hyps[key] = " ".join((text or "").split())
        if n % 50 == 0:
            logging.info("beam search: %d/%d utterances (%.1f s)", n, len(entries), time.time() - start)
    logging.info("beam search: decoded %d utterances in %.1f s", len(hyps), time.time() - start)
    return hyps


def load_decoder(job: Path, model_name: str, options: DecodeOptions) -> Callable[[Entries], Dict[str, str]]:
    """The job's model, loaded once, as a function from entries to hypotheses."""
    config, model_file = job / "config.yaml", job / model_name
    if options.beam:
        s2t = load_speech2text(config, model_file, read_decode_config(options.decode_config), options.device)
        return lambda entries: decode_beam(s2t, entries)
    model = load_model(config, model_file, options.device)
    return lambda entries: decode_greedy(model, entries, options.input_type, options.batch_size, options.device,
                                         options.unit)


# ------------------------------------------------------------------ files
def hyp_file(job: Path, test_set: str) -> Path:
    return job / "decode" / test_set / "text"


def score_dir(job: Path, test_set: str, unit: str = "char") -> Path:
    return job / "decode" / test_set / UNITS[unit][1]


def write_hyps(hyps: Dict[str, str], out: Path) -> Path:
    """``utt hypothesis`` lines sorted by id (an empty hypothesis leaves ``utt`` alone), atomically."""
    return write_text_atomic(out, "".join(f"{key} {hyps[key]}".rstrip() + "\n" for key in sorted(hyps)))


def score_set(job: Path, test_set: str, options: DecodeOptions):
    """Score ``<job>/decode/<set>/text`` against the reference of ``options.ref_dir``."""
    from espnet_delta.data.text_norm import normalize_transcript
    from espnet_delta.scoring import score
    from espnet_delta.scoring.phones import normalize_phones

    ref = options.ref_dir / test_set
    phones = options.unit == "phn"
    summary = score(
        ref / UNITS[options.unit][0], hyp_file(job, test_set), score_dir(job, test_set, options.unit),
        utt2spk=ref / "utt2spk" if (ref / "utt2spk").is_file() else None,
        use_sctk=options.use_sctk,
        system=job.name,
        test_set=test_set,
        normalizer=normalize_phones if phones else normalize_transcript,
    )
    logging.info("%s %s: %s %.2f %% (%d %s)", job, test_set, "PER" if phones else "WER",
                 summary.wer, summary.counts.words, "phones" if phones else "words")
    return summary


def decode_job(job: Path, model_name: str, tests: Sequence[Tuple[str, Path]], options: DecodeOptions) -> Dict[str, Any]:
    """Decode one job on every test set whose hypotheses are missing, and score every set when
    ``options.ref_dir`` is given; returns ``{set: ScoreSummary}`` of the scored sets."""
    job = Path(job)
    decoder = None
    summaries = {}
    for name, scp in tests:
        out = hyp_file(job, name)
        if out.is_file():
            logging.info("%s %s: %s exists, not decoding again", job, name, out)
        else:
            if decoder is None:
                decoder = load_decoder(job, model_name, options)
            write_hyps(decoder(read_entries(Path(scp))), out)
            logging.info("%s %s: wrote %s", job, name, out)
        if options.ref_dir is not None:
            summaries[name] = score_set(job, name, options)
    return summaries


def decode_jobs(jobs: Sequence[Path], model_name: str, tests: Sequence[Tuple[str, Path]],
                options: DecodeOptions) -> Dict[Path, Dict[str, Any]]:
    """:func:`decode_job` for each job, in one process. A full disk stops it with one line naming
    the file and the space needed (hypotheses are written atomically: no partial ``text``)."""
    try:
        return {Path(job): decode_job(Path(job), model_name, tests, options) for job in jobs}
    except OSError as e:
        if not is_disk_full(e):
            raise
        logging.error("%s", e if isinstance(e, DiskFullError) else DiskFullError(e.errno, e.filename or jobs[0]))
        raise SystemExit(1) from None
