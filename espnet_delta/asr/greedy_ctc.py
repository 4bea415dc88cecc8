"""Greedy CTC decoding of ESPnet ASR models, batched, for any input type.

ESPnet's ``asr_inference`` runs a CTC prefix beam search one utterance at a time
(and starts a process per job); for CTC-only models greedy decoding is what the
papers report and is far cheaper. :func:`decode_batches` works for waveform inputs
(S3PRL or delta-fusion frontends) and for cached feature matrices alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from espnet_delta.data.audio import TARGET_RATE, AudioError, read_audio
from espnet_delta.fileio import read_table

BLANK = 0


def ids_to_text(ids: Sequence[int], token_list: Sequence[str], collapse: bool = True) -> str:
    """Drop blanks, join characters; ``<space>`` separates words.

    ``collapse`` merges repeats, as CTC paths need; reference token sequences keep them.
    """
    out: List[str] = []
    prev = None
    for i in ids:
        if (i != prev or not collapse) and i != BLANK:
            token = token_list[i]
            out.append(" " if token == "<space>" else token)
        prev = i
    return " ".join("".join(out).split())


def read_scp(path: Path) -> List[Tuple[str, str]]:
    """``(utt, value)`` of a wav.scp or feats.scp, in file order."""
    entries = []
    for lineno, key, value in read_table(path, what="scp"):
        if not value:
            raise ValueError(f"{path}:{lineno}: expected '<utt> <path>', got {key!r}")
        entries.append((key, value))
    return entries


def load_input(value: str, input_type: str) -> np.ndarray:
    if input_type == "sound":
        try:
            wav, rate = read_audio(value)
        except AudioError as e:
            raise ValueError(f"{value}: {e}") from e
        if rate != TARGET_RATE or wav.shape[1] != 1:
            raise ValueError(f"{value}: {rate} Hz with {wav.shape[1]} channel(s), expected {TARGET_RATE} Hz mono")
        return wav[:, 0]
    if input_type == "kaldi_ark":
        import kaldiio

        return np.asarray(kaldiio.load_mat(value), dtype=np.float32)
    raise ValueError(f"input_type={input_type!r}; expected sound or kaldi_ark")


def batches(entries: List[Tuple[str, str]], input_type: str, batch_size: int) -> Iterator[Tuple[List[str], torch.Tensor, torch.Tensor]]:
    """Length-sorted batches (less padding), padded with zeros."""
    loaded = [(key, load_input(value, input_type)) for key, value in entries]
    loaded.sort(key=lambda kv: -len(kv[1]))
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        tensors = [torch.from_numpy(np.ascontiguousarray(x)) for _, x in chunk]
        lengths = torch.tensor([len(t) for t in tensors])
        yield [k for k, _ in chunk], torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True), lengths


@torch.no_grad()
def decode_batches(model, entries, input_type: str, batch_size: int = 8, device: str = "cpu") -> Dict[str, str]:
    """utt id -> hypothesis text, greedy CTC on ``model.encode``."""
    from tqdm import tqdm

    model.eval()
    hyps: Dict[str, str] = {}
    with tqdm(total=len(entries), unit="utt", desc="decode", leave=False) as bar:
        for keys, speech, lengths in batches(entries, input_type, batch_size):
            enc, enc_lens = model.encode(speech.to(device), lengths.to(device))
            if isinstance(enc, tuple):  # intermediate CTC (e.g. encoder: sshr): (out, [(layer, out_l), ...])
                enc = enc[0]
            ids = model.ctc.argmax(enc).cpu()
            for b, key in enumerate(keys):
                hyps[key] = ids_to_text(ids[b, : int(enc_lens[b])].tolist(), model.token_list)
            bar.update(len(keys))
    logging.info("decoded %d utterances", len(hyps))
    return hyps
