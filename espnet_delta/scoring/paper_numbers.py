"""The published numbers of Tables 1-5 of arXiv 2601.20142 ("Mind the Shift"), as data.

Transcribed from the full text of the paper (seed 001 of the project,
``shared/seeds/001_ac27d9f91dd9f5ff.txt``), one dict per table, cell -> number; a cell
key names the row and column the way the paper's table does, in short ASCII names:

* sizes: ``full`` (133 h of MyST train), ``10h``, ``5h``, ``1h``;
* models: ``wavlm``, ``hubert``, ``w2v2`` (fine-tuned single models), fusions
  ``wavlm+dhubert`` / ``wavlm+dw2v2`` (WavLM E_ft + a delta), ``wavlm+hubert`` /
  ``wavlm+w2v2`` (WavLM E_ft + fine-tuned embeddings);
* fusion methods: ``weighted``, ``xattn``, ``concat``;
* Tables 4 and 5 are of the full size only; their keys end in ``"full"`` all the same, so that
  a run's cell finds its published value by the paper size of its column alone.

``*_SIGNIFICANT`` hold the cells the paper marks with ``*`` (p < 0.05; Table 2 against
fine-tuned WavLM, Table 3 the delta fusion against the fine-tuned fusion). Every WER is on
MyST test, in percent. These are the paper's numbers on MyST with the large hub models:
a run on another corpus (the mini recipes) is not comparable with them.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Tuple

__all__ = ["SIZES", "TABLE1", "TABLE2", "TABLE2_SIGNIFICANT", "TABLE3", "TABLE3_SIGNIFICANT", "TABLE4", "TABLE5",
           "paper_size", "published_markdown"]

#: the paper's training sizes, in its column order
SIZES: Tuple[str, ...] = ("full", "10h", "5h", "1h")

#: Table 1: (delta model, fusion method, size) -> test WER of WavLM E_ft + that delta
TABLE1: Dict[Tuple[str, str, str], float] = {
    ("hubert", "weighted", "full"): 9.79, ("hubert", "xattn", "full"): 10.28, ("hubert", "concat", "full"): 9.71,
    ("w2v2", "weighted", "full"): 9.75, ("w2v2", "xattn", "full"): 9.80, ("w2v2", "concat", "full"): 9.64,
    ("hubert", "weighted", "10h"): 11.70, ("hubert", "xattn", "10h"): 12.64, ("hubert", "concat", "10h"): 11.57,
    ("w2v2", "weighted", "10h"): 11.73, ("w2v2", "xattn", "10h"): 12.96, ("w2v2", "concat", "10h"): 11.61,
    ("hubert", "weighted", "5h"): 13.65, ("hubert", "xattn", "5h"): 14.32, ("hubert", "concat", "5h"): 12.96,
    ("w2v2", "weighted", "5h"): 14.77, ("w2v2", "xattn", "5h"): 14.53, ("w2v2", "concat", "5h"): 12.88,
    ("hubert", "weighted", "1h"): 23.86, ("hubert", "xattn", "1h"): 23.11, ("hubert", "concat", "1h"): 22.74,
    ("w2v2", "weighted", "1h"): 23.42, ("w2v2", "xattn", "1h"): 25.97, ("w2v2", "concat", "1h"): 21.81,
}

#: Table 2: (model, size) -> test WER; the fusions are concat
TABLE2: Dict[Tuple[str, str], float] = {
    ("wavlm", "full"): 10.16, ("wavlm", "10h"): 11.95, ("wavlm", "5h"): 13.27, ("wavlm", "1h"): 22.47,
    ("hubert", "full"): 11.04, ("hubert", "10h"): 12.95, ("hubert", "5h"): 14.67, ("hubert", "1h"): 25.30,
    ("w2v2", "full"): 10.96, ("w2v2", "10h"): 13.47, ("w2v2", "5h"): 15.65, ("w2v2", "1h"): 25.97,
    ("wavlm+dhubert", "full"): 9.71, ("wavlm+dhubert", "10h"): 11.57, ("wavlm+dhubert", "5h"): 12.96,
    ("wavlm+dhubert", "1h"): 22.74,
    ("wavlm+dw2v2", "full"): 9.64, ("wavlm+dw2v2", "10h"): 11.61, ("wavlm+dw2v2", "5h"): 12.88,
    ("wavlm+dw2v2", "1h"): 21.81,
}
TABLE2_SIGNIFICANT: FrozenSet[Tuple[str, str]] = frozenset({
    ("wavlm+dhubert", "full"), ("wavlm+dhubert", "10h"), ("wavlm+dhubert", "5h"),  # 1 h: not marked
    ("wavlm+dw2v2", "full"), ("wavlm+dw2v2", "10h"), ("wavlm+dw2v2", "5h"), ("wavlm+dw2v2", "1h"),
})

#: Table 3: (size, fusion) -> test WER, concat of WavLM E_ft with fine-tuned or delta embeddings
TABLE3: Dict[Tuple[str, str], float] = {
    ("full", "wavlm+hubert"): 10.35, ("full", "wavlm+dhubert"): 9.71, ("full", "wavlm+w2v2"): 9.67,
    ("full", "wavlm+dw2v2"): 9.64,
    ("10h", "wavlm+hubert"): 11.84, ("10h", "wavlm+dhubert"): 11.57, ("10h", "wavlm+w2v2"): 11.66,
    ("10h", "wavlm+dw2v2"): 11.61,
    ("5h", "wavlm+hubert"): 13.21, ("5h", "wavlm+dhubert"): 12.96, ("5h", "wavlm+w2v2"): 12.89,
    ("5h", "wavlm+dw2v2"): 12.88,
    ("1h", "wavlm+hubert"): 25.27, ("1h", "wavlm+dhubert"): 22.74, ("1h", "wavlm+w2v2"): 22.80,
    ("1h", "wavlm+dw2v2"): 21.81,
}
TABLE3_SIGNIFICANT: FrozenSet[Tuple[str, str]] = frozenset({
    ("full", "wavlm+dhubert"), ("10h", "wavlm+dhubert"), ("5h", "wavlm+dhubert"), ("1h", "wavlm+dhubert"),
    ("1h", "wavlm+dw2v2"),
})

#: Table 4: (delta model, domain its model was fine-tuned on: child = MyST, adult = LibriSpeech
#: 100 h, size) -> test WER of WavLM (fine-tuned on MyST) + that delta; the full size only
TABLE4: Dict[Tuple[str, str, str], float] = {
    ("hubert", "child", "full"): 9.71, ("hubert", "adult", "full"): 10.06,
    ("w2v2", "child", "full"): 9.64, ("w2v2", "adult", "full"): 9.99,
}

#: Table 5: (delta model, column, size) -> the mean MoE weight on WavLM's E_ft (``w_ft``) and
#: the test WER (``wer``) of the two-expert MoE; the full size only
TABLE5: Dict[Tuple[str, str, str], float] = {
    ("hubert", "w_ft", "full"): 0.72, ("hubert", "wer", "full"): 9.83,
    ("w2v2", "w_ft", "full"): 0.65, ("w2v2", "wer", "full"): 9.70,
}


def paper_size(label: str) -> str:
    """The paper's size a run's column label stands for (``"10 h"`` -> ``"10h"``,
    ``"Full"`` -> ``"full"``), or ``""`` when it is none of the paper's sizes."""
    key = label.replace(" ", "").lower()
    return key if key in SIZES else ""


# ------------------------------------------------------------------ the published tables, as the paper lays them out

_SIZE_LABELS = {"full": "Full", "10h": "10h", "5h": "5h", "1h": "1h"}
_MODEL_LABELS = {"wavlm": "WavLM", "hubert": "HuBERT", "w2v2": "W2V2", "wavlm+dhubert": "WavLM + ΔHuBERT",
                 "wavlm+dw2v2": "WavLM + ΔW2V2", "wavlm+hubert": "HuBERT", "wavlm+w2v2": "W2V2"}
_METHOD_LABELS = {"weighted": "Weighted", "xattn": "X-Attn", "concat": "Concat"}


def _fmt(value: float, marked: bool = False) -> str:
    return f"{value:.2f}{'*' if marked else ''}"


def _table(header: List[str], rows: List[List[str]], text_columns: int = 1) -> str:
    """Markdown; the first ``text_columns`` columns (and Table 1's last) are left-aligned."""
    align = ["---" if k < text_columns or h == "Training Size" else "---:" for k, h in enumerate(header)]
    lines = ["|" + "|".join(header) + "|", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["|" + "|".join(r) + "|" for r in rows]) + "\n"


def published_markdown(number: int) -> str:
    """Table ``number`` as the paper prints it (its rows, columns and ``*`` marks), Markdown."""
    if number == 1:
        rows = [["WavLM", f"Δ{_MODEL_LABELS[m]}", _METHOD_LABELS[f], _fmt(w), _SIZE_LABELS[s]]
                for (m, f, s), w in TABLE1.items()]
        return _table(["FT Embed", "Delta Embed", "Fusion Method", "WER", "Training Size"], rows, 3)
    if number == 2:
        models = list(dict.fromkeys(m for m, _ in TABLE2))
        rows = [[_MODEL_LABELS[m]] + [_fmt(TABLE2[m, s], (m, s) in TABLE2_SIGNIFICANT) for s in SIZES] for m in models]
        return _table(["Model"] + [_SIZE_LABELS[s] for s in SIZES], rows)
    if number == 3:
        cols = ["wavlm+hubert", "wavlm+dhubert", "wavlm+w2v2", "wavlm+dw2v2"]
        rows = [[_SIZE_LABELS[s]] + [_fmt(TABLE3[s, c], (s, c) in TABLE3_SIGNIFICANT) for c in cols] for s in SIZES]
        return _table(["Data", "HuBERT", "ΔHuBERT", "W2V2", "ΔW2V2"], rows)
    if number == 4:
        rows = [[_MODEL_LABELS[m], _fmt(TABLE4[m, "child", "full"]), _fmt(TABLE4[m, "adult", "full"])]
                for m in ("hubert", "w2v2")]
        return _table(["Fusion (WavLM + Δ)", "MyST", "Libri"], rows)
    if number == 5:
        rows = [[f"WavLM + Δ{_MODEL_LABELS[m]}", _fmt(TABLE5[m, "w_ft", "full"]), _fmt(TABLE5[m, "wer", "full"])]
                for m in ("hubert", "w2v2")]
        return _table(["Fusion Model", "w_ft", "WER"], rows)
    raise ValueError(f"no Table {number} in arXiv 2601.20142 (tables 1-5)")
