"""Names of the embedding streams one extraction produces, and the choices that shape them.

An extraction runs a reference model and some other models and yields named streams:
``<model>.ft`` (the fine-tuned model's E_ft), ``<model>.delta`` (E_ft - E_pt) and, in
hand-written layouts, ``<model>.pt``. The extractor (:mod:`espnet_delta.ssl.embeddings`)
names its outputs with these and the feature cache
(:mod:`espnet_delta.features.layout`) names its columns with the same, so both read
them from here.
"""

from __future__ import annotations

from typing import List, Sequence

#: Mixed precision of the SSL forwards: none (float32), bfloat16 or float16 autocast.
AUTOCASTS = ("none", "bf16", "fp16")
FT, PT, DELTA = "ft", "pt", "delta"
KINDS = (FT, PT, DELTA)
#: What the other models contribute: E_delta = E_ft - E_pt or E_ft.
MODES = ("delta", "full")


def stream_name(model: str, kind: str) -> str:
    """``stream_name("hubert_local", "ft") == "hubert_local.ft"``; kinds: ft, pt, delta."""
    return f"{model}.{kind}"


def stream_names(reference: str, others: Sequence[str], mode: str) -> List[str]:
    """The streams of one extraction, in column order: the reference's E_ft, then per
    other model E_delta (``mode: delta`` only) and E_ft; refuses a name that occurs twice."""
    names = [stream_name(reference, FT)]
    for model in others:
        names += ([stream_name(model, DELTA)] if mode == "delta" else []) + [stream_name(model, FT)]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(
            f"stream names {dups} occur twice: the streams are named '<name>.ft' / '<name>.delta' after each "
            "model's 'name' (default: its S3PRL upstream name); give the models distinct names"
        )
    return names
