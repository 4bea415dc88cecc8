"""Greedy CTC: the best path of each frame, collapsed, blanks dropped, read as text or phones.

ESPnet's ``asr_inference`` runs a CTC prefix beam search one utterance at a time; for
CTC-only models greedy decoding is what the papers report and is far cheaper. These
functions turn a model's encoder output into token ids and text; loading inputs and
models and the per-job loop are :mod:`espnet_delta.asr.decoding`'s. The CTC-WER model
(:mod:`espnet_delta.asr.ctc_wer_model`) uses :func:`ids_to_text` for its validation WER.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

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


def ids_to_phones(ids: torch.Tensor, token_list: Sequence[str]) -> str:
    """Repeats collapsed, blanks dropped, every token one phone, separated by spaces."""
    path = torch.unique_consecutive(ids).tolist()
    return " ".join(token_list[i] for i in path if i != BLANK)


def best_paths(model, speech: torch.Tensor, lengths: torch.Tensor, device: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, T) on the CPU, encoder lengths (B,))``: the arg-max token of every frame of
    ``model.encode`` (an ESPnet ASR model with a CTC head)."""
    enc, enc_lens = model.encode(speech.to(device), lengths.to(device))
    if isinstance(enc, tuple):  # intermediate CTC (e.g. encoder: sshr): (out, [(layer, out_l), ...])
        enc = enc[0]
    return model.ctc.argmax(enc).cpu(), enc_lens
